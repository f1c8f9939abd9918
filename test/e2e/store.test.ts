import assert from "node:assert/strict";
import { cpSync, existsSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { postgresUnavailable, TEST_POSTGRES_URL, testSchemas } from "../fixtures/postgres.js";
import { assertCliError, assertOk, type ListRow, listJson, modeOf, mtls, tempDir } from "./helpers.js";

/** `mtls store migrate | backup | restore` and `--store` / MTLS_STORE, through the built CLI. */

const { dir, cleanup } = tempDir("mtls-e2e-store-");
after(cleanup);
const state = join(dir, "state");
const env = { MTLS_PASSPHRASE: "e2e-store" };
const run = (args: string[], extra: NodeJS.ProcessEnv = {}) =>
  mtls(args, { cwd: dir, env: { ...env, ...extra } });
const byName = (rows: ListRow[]) => [...rows].sort((a, b) => (a.serial < b.serial ? -1 : 1));

/** A SQLite CA with an issued, a revoked certificate and a token. */
async function sqliteCa(): Promise<void> {
  if (existsSync(state)) return;
  assertOk(await run(["init", "--state", state, "--name", "Store Corp", "--no-admin"]), "init");
  assertOk(await run(["issue", "client", "alice", "--state", state, "--out", join(dir, "out")]), "issue");
  assertOk(await run(["issue", "client", "bob", "--state", state, "--out", join(dir, "out")]), "issue bob");
  assertOk(await run(["revoke", "bob", "--state", state]), "revoke");
  assertOk(
    await run(["token", "create", "web", "--profile", "server", "--dns", "web.test", "--state", state]),
    "token",
  );
}

describe("mtls store backup and restore (SQLite)", () => {
  test("backs up to a 0600 file and restores into an empty state, refusing a non-empty one", async () => {
    await sqliteCa();
    const file = join(dir, "backup.jsonl");
    const backup = assertOk(await run(["store", "backup", file, "--state", state]), "backup");
    assert.match(backup.stdout, /backed up 4 certificates, 1 tokens, \d+ audit events/);
    assert.equal(modeOf(file), 0o600);
    assertCliError(await run(["store", "backup", file, "--state", state]), 1, /already exists/);

    const copy = join(dir, "copy");
    const restored = assertOk(await run(["store", "restore", file, "--state", copy]), "restore");
    assert.match(restored.stdout, /audit log OK: \d+ events, hash chain intact/);
    // The records are restored; the CA's certificates and keys are files, backed up apart.
    cpSync(join(state, "ca"), join(copy, "ca"), { recursive: true });
    assert.deepEqual(
      byName(await listJson(dir, ["--all", "--state", copy])),
      byName(await listJson(dir, ["--all", "--state", state])),
    );
    assertCliError(await run(["store", "restore", file, "--state", copy]), 1, /not empty.*--force/);
    assertOk(await run(["store", "restore", file, "--state", copy, "--force"]), "restore --force");
    assertCliError(
      await run(["store", "restore", join(dir, "missing.jsonl"), "--state", copy]),
      1,
      /no backup file/,
    );
  });

  test("says what is wrong with --store in one line", async () => {
    assertCliError(
      await run(["list", "--state", state, "--store", "other.db"]),
      2,
      /takes a postgres:\/\/ URL/,
    );
    const res = await run([
      "list",
      "--state",
      state,
      "--store",
      "postgres://mtls:s3cret-pw@127.0.0.1:1/test",
    ]);
    assertCliError(res, 1, /PostgreSQL at postgres:\/\/mtls@127\.0\.0\.1:1\/test is unreachable/);
    assert.ok(!res.stderr.includes("s3cret-pw"));
  });
});

const unavailable = await postgresUnavailable();
if (unavailable !== undefined) {
  console.warn(
    `\n*** SKIPPING mtls store migrate e2e tests: ${TEST_POSTGRES_URL} is unreachable (${unavailable}).\n`,
  );
}

describe("mtls store migrate to PostgreSQL", {
  skip: unavailable ? `PostgreSQL unreachable: ${unavailable}` : false,
}, () => {
  const schemas = testSchemas("mtls_e2e");
  after(() => schemas.dropAll());

  test("moves the CA's records to PostgreSQL, and the CA carries on there with --store or MTLS_STORE", async () => {
    await sqliteCa();
    const url = await schemas.create();
    const migrated = assertOk(await run(["store", "migrate", "--state", state, "--to", url]), "migrate");
    assert.match(migrated.stdout, /copied 4 certificates, 1 tokens, \d+ audit events/);
    assert.match(migrated.stdout, /hash chain intact/);
    assert.deepEqual(
      byName(await listJson(dir, ["--all", "--state", state, "--store", url])),
      byName(await listJson(dir, ["--all", "--state", state])),
    );
    assertCliError(await run(["store", "migrate", "--state", state, "--to", url]), 1, /not empty.*--force/);

    // Issue and revoke on PostgreSQL; the SQLite file no longer changes.
    assertOk(
      await run(
        ["issue", "server", "web", "--dns", "web.test", "--state", state, "--out", join(dir, "out")],
        { MTLS_STORE: url },
      ),
      "issue on pg",
    );
    assertOk(await run(["revoke", "alice", "--state", state, "--store", url]), "revoke on pg");
    const onPg = await listJson(dir, ["--all", "--state", state], { MTLS_STORE: url });
    assert.equal(onPg.find((r) => r.name === "web")?.status, "valid");
    assert.equal(onPg.find((r) => r.name === "alice")?.status, "revoked");
    const onSqlite = await listJson(dir, ["--all", "--state", state]);
    assert.equal(
      onSqlite.find((r) => r.name === "web"),
      undefined,
    );
    assert.match(
      assertOk(await run(["audit", "verify", "--state", state, "--store", url])).stdout,
      /hash chain intact/,
    );

    // And back: PostgreSQL to a fresh SQLite file.
    const back = join(dir, "back.db");
    assertOk(await run(["store", "migrate", "--from", url, "--to", back]), "migrate back");
    assert.ok(existsSync(back));
  });
});
