import { MtlsError } from "../errors.js";

/**
 * Where a Store lives, as the CLI and MTLS_STORE name it: a `postgres://` (or `postgresql://`) URL,
 * or anything else as the path of a SQLite file. Pure: no I/O.
 */
export type StoreLocation = { kind: "sqlite"; file: string } | { kind: "postgres"; url: string };

const POSTGRES = /^postgres(ql)?:\/\//i;

export function isPostgresUrl(value: string): boolean {
  return POSTGRES.test(value);
}

export function parseStoreLocation(value: string): StoreLocation {
  if (value.trim() === "") throw new MtlsError("E_USAGE", "the store location is empty");
  return isPostgresUrl(value) ? { kind: "postgres", url: value } : { kind: "sqlite", file: value };
}

/** What mtls reads from a PostgreSQL URL's query string itself; everything else goes to `pg`. */
export interface PostgresUrlSettings {
  /** The URL for `pg`, without mtls's own parameters. */
  connectionString: string;
  /** `?pool=N`: most connections this process opens. */
  poolSize?: number;
  /** `?statement_timeout=MS`. */
  statementTimeoutMs?: number;
  /** `?schema=NAME`: the schema the tables live in (its search_path). */
  schema?: string;
  /** `?application_name=NAME`. */
  applicationName?: string;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** A schema name used unquoted in search_path: letters, digits and underscores only. */
export function checkSchemaName(schema: string): string {
  if (!IDENTIFIER.test(schema)) {
    throw new MtlsError(
      "E_USAGE",
      `PostgreSQL schema "${schema}" must be letters, digits and underscores (at most 63)`,
    );
  }
  return schema;
}

function positiveInt(name: string, text: string): number {
  const n = Number(text);
  if (!(Number.isSafeInteger(n) && n > 0)) {
    throw new MtlsError(
      "E_USAGE",
      `PostgreSQL URL parameter ${name} must be a positive integer, not "${text}"`,
    );
  }
  return n;
}

function parseUrl(url: string): URL {
  try {
    return new URL(url);
  } catch {
    // The message must not echo the URL: it may hold a password.
    throw new MtlsError("E_USAGE", `not a valid PostgreSQL URL: ${describePostgresUrl(url)}`);
  }
}

export function parsePostgresUrl(url: string): PostgresUrlSettings {
  const parsed = parseUrl(url);
  const out: PostgresUrlSettings = { connectionString: "" };
  const take = (name: string): string | undefined => {
    const value = parsed.searchParams.get(name);
    parsed.searchParams.delete(name);
    return value ?? undefined;
  };
  const pool = take("pool");
  if (pool !== undefined) out.poolSize = positiveInt("pool", pool);
  const timeout = take("statement_timeout");
  if (timeout !== undefined) out.statementTimeoutMs = positiveInt("statement_timeout", timeout);
  const schema = take("schema");
  if (schema !== undefined) out.schema = checkSchemaName(schema);
  const app = take("application_name");
  if (app !== undefined) out.applicationName = app;
  out.connectionString = parsed.toString();
  return out;
}

/**
 * `host:port/database` (and the user, never the password), for messages and logs. Never throws,
 * whatever the input: an unparsable URL becomes "postgres://(unparsable URL)".
 */
export function describePostgresUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return "postgres://(unparsable URL)";
  }
  const socket = parsed.searchParams.get("host");
  const host = parsed.hostname ? decodeURIComponent(parsed.hostname) : socket || "localhost";
  const port = parsed.port || "5432";
  const db = decodeURIComponent(parsed.pathname.replace(/^\//, "")) || "(default database)";
  const user = parsed.username ? `${decodeURIComponent(parsed.username)}@` : "";
  const schema = parsed.searchParams.get("schema");
  return `postgres://${user}${host}:${port}/${db}${schema ? ` (schema ${schema})` : ""}`;
}
