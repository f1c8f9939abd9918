import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { TEST_ACTOR as ACTOR, caFixtures, rejectsCode, TEST_PASSPHRASE } from "../../test/fixtures/ca.js";
import { postgresUnavailable, TEST_POSTGRES_URL, testSchemas } from "../../test/fixtures/postgres.js";
import { statePaths } from "../config/state.js";
import { isMtlsError } from "../errors.js";
import { parseCrls } from "../pki/crl.js";
import { buildCsrPem } from "../pki/csr-builder.js";
import { generateKeyPair } from "../pki/keys.js";
import type { San } from "../pki/names.js";
import { keyObjectSigner } from "../pki/signer.js";
import type { CertificateAuthority } from "./authority.js";
import { SHARED_STORE_PENDING_GRACE_MS } from "./deliver.js";
import { initCa } from "./init.js";
import { openCa } from "./open.js";
import { createToken, enroll } from "./tokens.js";

/** The CA's behaviour when several nodes share one store: serial conflicts, tokens, revocation, CRLs. */

const DNS: San[] = [{ type: "dns", value: "web.acme.test" }];
const { freshCa } = caFixtures("scale-out");

describe("CertificateAuthority.issue and serial conflicts", () => {
  test("signs again under a fresh serial when the serial is already in the store", async () => {
    const { ca } = await freshCa();
    const first = await ca.issue({ profile: "server", name: "web", sans: DNS, actor: ACTOR });
    const generated: string[] = [];
    let calls = 0;
    const random = ca.newSerial;
    ca.newSerial = () => {
      const s = calls++ === 0 ? first.record.serial : random();
      generated.push(s);
      return s;
    };
    const second = await ca.issue({ profile: "server", name: "web", sans: DNS, actor: ACTOR });
    assert.equal(generated.length, 2);
    assert.equal(second.record.serial, generated[1]);
    assert.notEqual(second.record.serial, first.record.serial);
    assert.equal(second.certificate.serial, second.record.serial);
    assert.equal((await ca.store.findCertificates({ name: "web" })).length, 2);
    assert.deepEqual(await ca.store.verifyAudit(), { ok: true, count: (await ca.store.listAudit()).length });
  });

  test("gives up with E_STORE when the serial source keeps repeating itself", async () => {
    const { ca } = await freshCa();
    const first = await ca.issue({ profile: "server", name: "web", sans: DNS, actor: ACTOR });
    let calls = 0;
    ca.newSerial = () => {
      calls++;
      return first.record.serial;
    };
    await rejectsCode(ca.issue({ profile: "server", name: "web", sans: DNS, actor: ACTOR }), "E_STORE");
    assert.equal(calls, 3);
    assert.equal((await ca.store.findCertificates({ name: "web" })).length, 1);
  });
});

const unavailable = await postgresUnavailable();
if (unavailable !== undefined) {
  console.warn(
    `\n*** SKIPPING the CA-on-PostgreSQL tests: ${TEST_POSTGRES_URL} is unreachable (${unavailable}).\n`,
  );
}
const skip = unavailable === undefined ? false : `PostgreSQL unreachable: ${unavailable}`;

describe("two CA nodes on one PostgreSQL database", { skip }, () => {
  const schemas = testSchemas("mtls_ca");
  const root = mkdtempSync(join(tmpdir(), "mtls-scale-out-"));
  const opened: CertificateAuthority[] = [];
  after(async () => {
    for (const ca of opened) await ca.store.close().catch(() => undefined);
    await schemas.dropAll();
    rmSync(root, { recursive: true, force: true });
  });

  /** Node A made by `mtls init --store URL`; node B a copy of its state directory on the same URL. */
  async function twoNodes(): Promise<[CertificateAuthority, CertificateAuthority]> {
    const url = await schemas.create();
    const a = statePaths(join(root, `a-${opened.length}`), url);
    const b = statePaths(join(root, `b-${opened.length}`), url);
    await initCa({ paths: a, name: "Acme", passphrase: TEST_PASSPHRASE, actor: ACTOR, admin: false });
    assert.equal(existsSync(a.database), false, "no SQLite file when the store is PostgreSQL");
    cpSync(join(a.dir, "ca"), join(b.dir, "ca"), { recursive: true });
    const open = async (paths: typeof a) => {
      const ca = await openCa(paths, { env: { MTLS_PASSPHRASE: TEST_PASSPHRASE } });
      opened.push(ca);
      return ca;
    };
    return [await open(a), await open(b)];
  }

  test("a node opening the CA leaves another node's delivery in progress alone, and repairs it once stale", async () => {
    const [a, b] = await twoNodes();
    const inFlight = await a.issue({
      profile: "server",
      name: "web",
      sans: DNS,
      actor: ACTOR,
      pending: { certPath: join(root, "elsewhere", "web.crt"), keyPath: null },
    });
    const statusOf = async () => (await a.store.getCertificate(inFlight.record.serial))?.status;
    const reopen = async (at: Date) => {
      const ca = await openCa(b.paths, { env: { MTLS_PASSPHRASE: TEST_PASSPHRASE }, clock: () => at });
      opened.push(ca);
    };
    await reopen(new Date());
    assert.equal(await statusOf(), "pending");
    await reopen(new Date(Date.now() + SHARED_STORE_PENDING_GRACE_MS + 60_000));
    assert.equal(await statusOf(), "aborted");
  });

  test("init refuses a database that already holds a CA", async () => {
    const [a] = await twoNodes();
    const again = statePaths(join(root, "again"), a.paths.storeUrl);
    await rejectsCode(
      initCa({ paths: again, name: "Other", passphrase: TEST_PASSPHRASE, actor: ACTOR, admin: false }),
      "E_EXISTS",
    );
  });

  test("enrolls each token once, revokes each certificate once, and keeps CRL numbers and the audit chain whole", async () => {
    const [a, b] = await twoNodes();
    const nodes = [a, b];
    const tokens = [];
    for (let i = 0; i < 16; i++) {
      tokens.push(
        (await createToken(a, { name: `svc-${i}`, profile: "server", sans: DNS }, { actor: ACTOR })).token,
      );
    }
    const key = generateKeyPair("ec-p256").privateKey;
    const csr = await buildCsrPem({ subject: { commonName: "x" } }, keyObjectSigner(key));

    // Every token presented to both nodes at the same moment: one enrollment each, the other refused.
    const results = await Promise.allSettled(
      tokens.flatMap((token) => nodes.map((ca) => enroll(ca, { token, csr }))),
    );
    const issued = results.flatMap((r) => (r.status === "fulfilled" ? [r.value.record.serial] : []));
    assert.equal(issued.length, tokens.length);
    for (const r of results) {
      if (r.status === "rejected") assert.ok(isMtlsError(r.reason, "E_TOKEN_USED"), String(r.reason));
    }

    // Every certificate revoked from both nodes at once: one revocation each.
    const revoked = await Promise.all(
      issued.flatMap((serial) => nodes.map((ca) => ca.revoke([serial], "keyCompromise", ACTOR))),
    );
    assert.equal(revoked.flat().length, issued.length);

    const events = await b.store.listAudit();
    const crlNumbers = events
      .filter((e) => e.action === "crl.generate" && e.subject === a.intermediate.serial)
      .map((e) => (e.details as { crlNumber: number }).crlNumber);
    assert.ok(crlNumbers.length >= issued.length);
    for (let i = 1; i < crlNumbers.length; i++) {
      assert.ok((crlNumbers[i] as number) > (crlNumbers[i - 1] as number), `CRL numbers ${crlNumbers}`);
    }
    // The last CRL either node wrote lists every revocation.
    const last = Math.max(...crlNumbers);
    const newest = nodes
      .map((ca) => parseCrls(readFileSync(ca.paths.crl, "utf8"))[0])
      .find((crl) => crl?.crlNumber === last);
    assert.ok(newest, `a node published CRL ${last}`);
    assert.equal(newest.index.entries.size, issued.length);

    const count = (action: string) => events.filter((e) => e.action === action).length;
    assert.equal(count("cert.issue"), issued.length);
    assert.equal(count("cert.revoke"), issued.length);
    assert.equal(count("token.use"), tokens.length);
    assert.deepEqual(await a.store.verifyAudit(), { ok: true, count: events.length });
  });
});
