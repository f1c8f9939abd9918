/**
 * The one-time secrets that travel in a path (an enrollment link's token, a download id), replaced
 * for the log: a link that has not been used yet is as good as a certificate to whoever reads the
 * log. The token's id (its public part, also the audit subject) stays, so lines can be matched.
 */
export function redactPath(path: string): string {
  if (!path.startsWith("/enroll/")) return path;
  if (path.startsWith("/enroll/download/"))
    return path.replace(/^\/enroll\/download\/[^/]+/, "/enroll/download/[redacted]");
  return path.replace(
    /^\/enroll\/(mtls_[0-9a-f]{16}\.)?[^/]+/,
    (_m, id: string | undefined) => `/enroll/${id ?? ""}[redacted]`,
  );
}
