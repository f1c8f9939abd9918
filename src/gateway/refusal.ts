import type { ErrorCode } from "../errors.js";
import type { PeerIdentity } from "../policy/index.js";
import type { RefusalReason } from "../tls/index.js";

/**
 * What the gateway answers instead of a raw TLS alert: a page for people (Accept: text/html) that
 * says what happened and links to enrollment, and JSON with a stable code for programs.
 */

/** Why a request got no further than the gateway. */
export type GatewayRefusal =
  | RefusalReason
  | "no_route"
  | "bad_request"
  | "too_large"
  | "upstream_unreachable"
  | "upstream_timeout";

export interface RefusalAnswer {
  status: number;
  code: ErrorCode;
  /** Page heading. */
  title: string;
  /** One sentence for people and programs alike (never internal details such as file paths). */
  message: string;
  /** Whether the enrollment link helps (certificate problems). */
  enroll: boolean;
}

const ANSWERS: Record<GatewayRefusal, RefusalAnswer> = {
  no_certificate: {
    status: 401,
    code: "E_NOT_AUTHENTICATED",
    title: "A client certificate is needed",
    message: "This address admits only clients with a certificate, and none was presented.",
    enroll: true,
  },
  expired: {
    status: 401,
    code: "E_EXPIRED",
    title: "Your certificate has expired",
    message: "The client certificate presented is expired or not yet valid.",
    enroll: true,
  },
  revoked: {
    status: 401,
    code: "E_REVOKED",
    title: "Your certificate has been revoked",
    message: "The client certificate presented has been revoked and no longer admits anyone.",
    enroll: true,
  },
  unknown_ca: {
    status: 401,
    code: "E_UNTRUSTED",
    title: "Your certificate is from an unknown authority",
    message: "The client certificate presented was not issued by a certificate authority this site trusts.",
    enroll: true,
  },
  bad_purpose: {
    status: 401,
    code: "E_PURPOSE",
    title: "This certificate cannot be used to sign in",
    message: "The certificate presented is not a client certificate.",
    enroll: true,
  },
  handshake_error: {
    status: 401,
    code: "E_NOT_AUTHENTICATED",
    title: "Your certificate could not be checked",
    message: "The client certificate presented could not be verified.",
    enroll: true,
  },
  handshake_timeout: {
    status: 401,
    code: "E_NOT_AUTHENTICATED",
    title: "Your certificate could not be checked",
    message: "The client certificate presented could not be verified.",
    enroll: true,
  },
  bad_name: {
    status: 401,
    code: "E_NOT_AUTHENTICATED",
    title: "Your certificate could not be checked",
    message: "The client certificate presented could not be verified.",
    enroll: true,
  },
  not_allowed: {
    status: 403,
    code: "E_NOT_AUTHORIZED",
    title: "Your certificate does not give access here",
    message: "The client certificate presented is valid, but it is not allowed for this route.",
    enroll: false,
  },
  no_route: {
    status: 404,
    code: "E_NOT_FOUND",
    title: "Not found",
    message: "No route of this gateway serves this address.",
    enroll: false,
  },
  bad_request: {
    status: 400,
    code: "E_BAD_INPUT",
    title: "Bad request",
    message: "The request target is not a path this gateway can route.",
    enroll: false,
  },
  too_large: {
    status: 413,
    code: "E_TOO_LARGE",
    title: "Request too large",
    message: "The request body is larger than this gateway allows.",
    enroll: false,
  },
  upstream_unreachable: {
    status: 502,
    code: "E_UNAVAILABLE",
    title: "The service is unavailable",
    message: "The service behind this gateway could not be reached.",
    enroll: false,
  },
  upstream_timeout: {
    status: 504,
    code: "E_UNAVAILABLE",
    title: "The service did not answer in time",
    message: "The service behind this gateway did not answer in time.",
    enroll: false,
  },
};

export function refusalAnswer(reason: GatewayRefusal): RefusalAnswer {
  return ANSWERS[reason];
}

/** Whether the client prefers HTML (a browser) to JSON: text/html listed with a q at least that of JSON. */
export function wantsHtml(accept: string | undefined): boolean {
  if (!accept) return false;
  let html = 0;
  let json = 0;
  for (const part of accept.toLowerCase().split(",")) {
    const [type = "", ...params] = part.split(";").map((s) => s.trim());
    const qParam = params.find((p) => p.startsWith("q="));
    const q = qParam ? Number(qParam.slice(2)) : 1;
    if (!Number.isFinite(q)) continue;
    if (type === "text/html" || type === "application/xhtml+xml") html = Math.max(html, q);
    else if (type === "application/json" || type.endsWith("+json")) json = Math.max(json, q);
  }
  return html > 0 && html >= json;
}

const HTML_ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c] as string);
}

export interface PageContext {
  /** Where people get a certificate (--enroll-url). */
  enrollUrl?: string;
  /** The certificate presented, when there was one: its subject and serial are shown to its owner. */
  identity?: PeerIdentity;
  method?: string;
  path?: string;
}

/** The page for a person: what happened, which certificate, and where to get a valid one. */
export function refusalHtml(answer: RefusalAnswer, ctx: PageContext = {}): string {
  const who = ctx.identity
    ? `<p>Certificate presented: <code>${escapeHtml(ctx.identity.subject)}</code>, serial <code>${escapeHtml(ctx.identity.serial)}</code>, valid until ${escapeHtml(ctx.identity.notAfter.toISOString())}.</p>`
    : "";
  const where = ctx.path
    ? `<p>Request: <code>${escapeHtml(`${ctx.method ?? "GET"} ${ctx.path}`)}</code></p>`
    : "";
  const enroll =
    answer.enroll && ctx.enrollUrl
      ? `<p><a class="button" href="${escapeHtml(ctx.enrollUrl)}">Get a certificate</a></p><p>After installing it, restart the browser (or close all its windows) and open this page again.</p>`
      : answer.enroll
        ? "<p>Ask your administrator for a client certificate, install it in your browser, and open this page again.</p>"
        : "";
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(answer.title)}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222;line-height:1.5}
h1{font-size:1.5rem}code{background:#f3f3f3;padding:0 .2rem;word-break:break-all}
.button{display:inline-block;padding:.5rem 1rem;background:#0b5fff;color:#fff;border-radius:.3rem;text-decoration:none}
.code{color:#777;font-size:.85rem}
</style>
</head>
<body>
<h1>${escapeHtml(answer.title)}</h1>
<p>${escapeHtml(answer.message)}</p>
${who}${where}${enroll}
<p class="code">${answer.status} · ${escapeHtml(answer.code)}</p>
</body>
</html>
`;
}

/** The JSON for a program: `{"error":{"code":"E_…","message":"…"}}`. */
export function refusalJson(answer: RefusalAnswer): string {
  return JSON.stringify({ error: { code: answer.code, message: answer.message } });
}

/** Body and headers of a refusal, negotiated on the Accept header. */
export function renderRefusal(
  answer: RefusalAnswer,
  accept: string | undefined,
  ctx: PageContext = {},
): { body: string; headers: Record<string, string> } {
  const html = wantsHtml(accept);
  const body = html ? refusalHtml(answer, ctx) : refusalJson(answer);
  return {
    body,
    headers: {
      "content-type": html ? "text/html; charset=utf-8" : "application/json",
      "content-length": String(Buffer.byteLength(body)),
      "cache-control": "no-store",
      "x-content-type-options": "nosniff",
      ...(html ? { "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'" } : {}),
      vary: "Accept",
    },
  };
}
