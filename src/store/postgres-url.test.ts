import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isMtlsError } from "../errors.js";
import { defaultUser, withDefaultUser } from "./postgres.js";
import { isConnectionFailure } from "./postgres-errors.js";
import { describePostgresUrl, isPostgresUrl, parsePostgresUrl, parseStoreLocation } from "./postgres-url.js";

describe("PostgreSQL store URLs", () => {
  it("tells a PostgreSQL URL from a SQLite path", () => {
    assert.ok(isPostgresUrl("postgres://db/mtls"));
    assert.ok(isPostgresUrl("PostgreSQL://db/mtls"));
    assert.ok(!isPostgresUrl(".mtls/mtls.db"));
    assert.ok(!isPostgresUrl("/var/lib/postgres://x"));
    assert.deepEqual(parseStoreLocation("a.db"), { kind: "sqlite", file: "a.db" });
    assert.deepEqual(parseStoreLocation("postgres://h/d"), { kind: "postgres", url: "postgres://h/d" });
    assert.throws(
      () => parseStoreLocation(" "),
      (err) => isMtlsError(err, "E_USAGE"),
    );
  });

  it("takes mtls's own parameters out of the URL and leaves the rest for pg", () => {
    const s = parsePostgresUrl(
      "postgres://u:p@db:6432/mtls?pool=20&statement_timeout=5000&schema=ca_one&application_name=node-a&sslmode=require",
    );
    assert.equal(s.poolSize, 20);
    assert.equal(s.statementTimeoutMs, 5000);
    assert.equal(s.schema, "ca_one");
    assert.equal(s.applicationName, "node-a");
    assert.equal(s.connectionString, "postgres://u:p@db:6432/mtls?sslmode=require");
    for (const bad of ["?pool=0", "?pool=x", "?statement_timeout=-1", "?schema=a;drop"]) {
      assert.throws(
        () => parsePostgresUrl(`postgres://db/mtls${bad}`),
        (err) => isMtlsError(err, "E_USAGE"),
        bad,
      );
    }
  });

  it("describes the server without the password, whatever the input", () => {
    assert.equal(
      describePostgresUrl("postgres://mtls:s3cret@db.internal:6432/ca"),
      "postgres://mtls@db.internal:6432/ca",
    );
    assert.equal(describePostgresUrl("postgres://db/ca?schema=one"), "postgres://db:5432/ca (schema one)");
    assert.equal(describePostgresUrl("postgres://"), "postgres://localhost:5432/(default database)");
    assert.equal(describePostgresUrl("postgres://a:b@[::1"), "postgres://(unparsable URL)");
    assert.throws(
      () => parsePostgresUrl("postgres://a:s3cret@[::1/x"),
      (err) => isMtlsError(err, "E_USAGE") && !err.message.includes("s3cret"),
    );
  });

  it("sends a user name when the URL has none, as libpq does", () => {
    const user = defaultUser({ PGUSER: "pguser", USER: "osuser" });
    assert.equal(user, "pguser");
    assert.equal(defaultUser({ USER: "osuser" }), "osuser");
    assert.equal(withDefaultUser("postgres://alice@db/x"), "postgres://alice@db/x");
    assert.equal(withDefaultUser("postgres://db/x?user=bob"), "postgres://db/x?user=bob");
    assert.equal(new URL(withDefaultUser("postgres://db/x")).username, encodeURIComponent(defaultUser()));
    assert.equal(
      new URL(withDefaultUser("postgres:///x?host=/run/postgresql")).searchParams.get("user"),
      defaultUser(),
    );
  });

  it("classifies connection failures apart from statement failures", () => {
    const withCode = (code: string, message = "x") => Object.assign(new Error(message), { code });
    assert.ok(isConnectionFailure(withCode("ECONNREFUSED")));
    assert.ok(isConnectionFailure(withCode("57P01")));
    assert.ok(isConnectionFailure(withCode("08006")));
    assert.ok(isConnectionFailure(new Error("Connection terminated unexpectedly")));
    assert.ok(isConnectionFailure(new AggregateError([withCode("ECONNREFUSED"), withCode("ECONNREFUSED")])));
    assert.ok(!isConnectionFailure(withCode("23505", "duplicate key")));
    assert.ok(!isConnectionFailure(withCode("57014", "canceling statement due to statement timeout")));
    assert.ok(!isConnectionFailure(new AggregateError([])));
    assert.ok(!isConnectionFailure("ECONNREFUSED"));
  });
});
