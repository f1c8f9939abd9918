import { MtlsError } from "../errors.js";

/**
 * Which `pg` failures mean "the server is not there (or went away)" rather than "this statement
 * failed": socket errors, SQLSTATE class 08 (connection exception), the server shutting down or
 * refusing connections, and pg's own connect timeout and dropped-connection messages.
 */
const SOCKET_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EPIPE",
]);
const SERVER_GONE = new Set(["57P01", "57P02", "57P03", "53300"]);
const DROPPED =
  /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Connection ended/i;

export function isConnectionFailure(err: unknown): boolean {
  if (err instanceof AggregateError) return err.errors.length > 0 && err.errors.every(isConnectionFailure);
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (
    typeof code === "string" &&
    (SOCKET_CODES.has(code) || SERVER_GONE.has(code) || code.startsWith("08"))
  ) {
    return true;
  }
  return DROPPED.test(err.message);
}

/** The driver's reason in one line; an AggregateError (one per address tried) gives its first. */
export function reasonOf(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) return reasonOf(err.errors[0]);
  if (err instanceof Error) return err.message || (err as { code?: string }).code || err.name;
  return String(err);
}

/** Authentication and "no such database/role" failures: the server answered, and said no. */
const REFUSED = new Set(["28P01", "28000", "3D000", "42501"]);

/**
 * A failure while connecting, as one line naming the server (never the password): E_UNAVAILABLE
 * when it cannot be reached, E_STORE when it refused (wrong password, no such database).
 */
export function connectError(where: string, err: unknown): MtlsError {
  if (err instanceof MtlsError) return err;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" && REFUSED.has(code)) {
    return new MtlsError("E_STORE", `PostgreSQL at ${where} refused the connection: ${reasonOf(err)}`, {
      cause: err,
    });
  }
  if (isConnectionFailure(err)) {
    return new MtlsError("E_UNAVAILABLE", `PostgreSQL at ${where} is unreachable: ${reasonOf(err)}`, {
      cause: err,
    });
  }
  return new MtlsError("E_STORE", `could not connect to PostgreSQL at ${where}: ${reasonOf(err)}`, {
    cause: err,
  });
}

/** A statement that failed because the connection did: E_UNAVAILABLE; anything else unchanged. */
export function queryError(where: string, err: unknown): unknown {
  if (err instanceof MtlsError || !isConnectionFailure(err)) return err;
  return new MtlsError("E_UNAVAILABLE", `lost the connection to PostgreSQL at ${where}: ${reasonOf(err)}`, {
    cause: err,
  });
}
