/**
 * The admin console, the enrollment portal and /check over real HTTPS: startCaServer in process on
 * a fresh CA, browsers played by node:https with the CA's client certificates. The browser test
 * with Chromium (test/e2e) drives the same pages with clicks.
 */
import assert from "node:assert/strict";
import type { KeyObject } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { initCa, openCa } from "../../ca/index.js";
import { type StatePaths, statePaths } from "../../config/state.js";
import { createLogger } from "../../observe/index.js";
import { parseCertificates } from "../../pki/certinfo.js";
import { pkcs8Of } from "../../pki/keys.js";
import { makeSan } from "../../pki/names.js";
import { pemEncode } from "../../pki/pem.js";
import { parsePkcs12 } from "../../pki/pkcs12.js";
import { type RunningCaServer, startCaServer } from "../serve.js";
import { CSP } from "./security.js";

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
}
interface Identity {
  cert: string;
  key: string;
  serial: string;
}

const keyPem = (k: KeyObject) => pemEncode("PRIVATE KEY", pkcs8Of(k));

function send(
  url: string,
  opts: {
    method?: string;
    form?: Record<string, string>;
    headers?: Record<string, string>;
    id?: Identity;
    ca: string;
  },
): Promise<Res> {
  const body = opts.form ? new URLSearchParams(opts.form).toString() : undefined;
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(url),
      {
        method: opts.method ?? (body !== undefined ? "POST" : "GET"),
        headers: {
          ...(body !== undefined ? { "content-type": "application/x-www-form-urlencoded" } : {}),
          ...opts.headers,
        },
        agent: false,
        ca: opts.ca,
        ...(opts.id ? { cert: opts.id.cert, key: opts.id.key } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const b = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: b, text: b.toString("utf8") });
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

/** The value of the first hidden `_csrf` input of a page. */
function csrfOf(page: string): string {
  const m = /name="_csrf" value="([^"]+)"/.exec(page);
  assert.ok(m, "the page has a CSRF field");
  return m[1] as string;
}

/** Decodes the few entities html.ts writes, to read values back out of a page. */
const decodeEntities = (s: string) =>
  s
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&#96;/g, "`")
    .replace(/&amp;/g, "&");

const secretOf = (page: string, id: string): string => {
  const m = new RegExp(`id="${id}">([^<]+)<`).exec(page);
  assert.ok(m, `the page shows #${id}`);
  return decodeEntities(m[1] as string);
};

function assertPage(res: Res, status: number): void {
  assert.equal(res.status, status, res.text.slice(0, 600));
  assert.match(String(res.headers["content-type"]), /^text\/html; charset=utf-8/);
  assert.equal(res.headers["content-security-policy"], CSP);
  assert.equal(res.headers["x-content-type-options"], "nosniff");
  assert.equal(res.headers["referrer-policy"], "no-referrer");
  assert.equal(res.headers["cache-control"], "no-store");
  assert.match(res.text, /^<!doctype html>/);
}

describe("admin console and enrollment portal (in process)", { concurrency: 1 }, () => {
  let dir = "";
  let paths: StatePaths;
  let server: RunningCaServer;
  let api = "";
  let rootPem = "";
  let admin: Identity;
  let alice: Identity;
  let foreign: Identity;
  /** What the service logged (one JSON line per request). */
  const logLines: string[] = [];

  const issueId = async (name: string, commonName?: string): Promise<Identity> => {
    const issued = await server.ca.issue({
      profile: "client",
      name,
      sans: [makeSan("email", `${name}@acme.test`)],
      ...(commonName ? { commonName } : {}),
      actor: "test",
    });
    assert.ok(issued.privateKey);
    return { cert: issued.chainPem, key: keyPem(issued.privateKey), serial: issued.record.serial };
  };
  const get = (path: string, id?: Identity, headers?: Record<string, string>) =>
    send(api + path, { ca: rootPem, ...(id ? { id } : {}), ...(headers ? { headers } : {}) });
  const post = (
    path: string,
    form: Record<string, string>,
    id?: Identity,
    headers?: Record<string, string>,
  ) => send(api + path, { ca: rootPem, form, ...(id ? { id } : {}), ...(headers ? { headers } : {}) });
  /** Loads the form page as the admin, then posts it with that page's CSRF token. */
  const submit = async (formPath: string, action: string, fields: Record<string, string>, id = admin) => {
    const formPage = await get(formPath, id);
    assertPage(formPage, 200);
    return post(action, { _csrf: csrfOf(formPage.text), ...fields }, id, {
      origin: new URL(api).origin,
      "sec-fetch-site": "same-origin",
    });
  };

  before(async () => {
    dir = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "mtls-ui-"));
    paths = statePaths(join(dir, "state"));
    const init = await initCa({ paths, name: "Acme", passphrase: "test", actor: "test" });
    assert.ok(init.admin?.files);
    server = await startCaServer({
      paths,
      listen: "127.0.0.1:0",
      publicListen: null,
      env: { MTLS_PASSPHRASE: "test" },
      logger: createLogger({
        level: "info",
        destination: { write: (line: string) => void logLines.push(line) },
      }),
      rateLimit: 1000,
    });
    api = server.api.url;
    rootPem = readFileSync(paths.rootCert, "utf8");
    admin = {
      cert: readFileSync(init.admin.files.cert, "utf8"),
      key: readFileSync(init.admin.files.key, "utf8"),
      serial: init.admin.serial,
    };
    alice = await issueId("alice");
    const otherPaths = statePaths(join(dir, "other"));
    await initCa({ paths: otherPaths, name: "Other", passphrase: "test", actor: "test" });
    const other = await openCa(otherPaths, { env: { MTLS_PASSPHRASE: "test" } });
    const o = await other.issue({ profile: "client", name: "mallory", sans: [], actor: "test" });
    assert.ok(o.privateKey);
    foreign = { cert: o.chainPem, key: keyPem(o.privateKey), serial: o.record.serial };
    await other.store.close();
  });
  after(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  describe("the door", () => {
    it("answers a browser without a certificate with a 401 page that says how to get in", async () => {
      const res = await get("/admin");
      assertPage(res, 401);
      assert.match(res.text, /Sign in with your admin certificate/);
      assert.match(res.text, /admin\.p12/);
    });

    it("answers a valid certificate that is not an admin's with a 403 page naming it", async () => {
      const res = await get("/admin/certificates", alice);
      assertPage(res, 403);
      assert.match(res.text, /not an administrator/);
      assert.match(res.text, /<strong>alice<\/strong>/);
    });

    it("treats a certificate of another CA as none (401)", async () => {
      assertPage(await get("/admin", foreign), 401);
    });

    it("records the refusals in the audit log, as the API does", async () => {
      const events = await server.ca.store.listAuditPage({ limit: 20, action: "api.denied" });
      assert.ok(
        events.some((e) => e.actor === `api:${alice.serial}` && e.details.path === "/admin/certificates"),
      );
      assert.ok(events.some((e) => e.actor === "anonymous" && e.details.path === "/admin"));
    });
  });

  describe("pages", () => {
    it("overview: counts, the 90-day expiry chart, the CA certificates and the last CRL", async () => {
      const res = await get("/admin", admin);
      assertPage(res, 200);
      assert.match(res.text, /<svg class="chart"[^>]*role="img"/);
      assert.match(res.text, /expire within 7 days/);
      assert.match(res.text, /expire within 30 days/);
      assert.match(res.text, /<h3>Root /);
      assert.match(res.text, /<h3>Intermediate /);
      assert.match(res.text, /Last CRL<\/dt><dd><time/);
      assert.match(res.text, /Signed in as <strong>admin<\/strong>/);
      assert.doesNotMatch(res.text, /style=/, "no inline styles (the CSP forbids them)");
      assert.doesNotMatch(res.text, /<script>/, "no inline scripts");
    });

    it("serves the stylesheet and script with a content hash and a long cache", async () => {
      const page = (await get("/admin", admin)).text;
      for (const [name, type] of [
        ["app.css", /^text\/css/],
        ["app.js", /^text\/javascript/],
      ] as const) {
        const m = new RegExp(`/ui/${name.replace(".", "\\.")}\\?v=([0-9a-f]{16})`).exec(page);
        assert.ok(m, `the page links ${name} with its hash`);
        const res = await get(`/ui/${name}?v=${m[1]}`);
        assert.equal(res.status, 200);
        assert.match(String(res.headers["content-type"]), type);
        assert.match(String(res.headers["cache-control"]), /max-age=31536000, immutable/);
        assert.equal(res.headers.etag, `"${m[1]}"`);
        assert.equal((await get(`/ui/${name}`, undefined, { "if-none-match": `"${m[1]}"` })).status, 304);
      }
    });

    it("renders a CN of <script> as text in the list, the detail and the search box", async () => {
      const evil = "<script>alert(1)</script>";
      const x = await issueId("xss-test", evil);
      const list = await get(`/admin/certificates?q=${encodeURIComponent(evil)}`, admin);
      assertPage(list, 200);
      assert.doesNotMatch(list.text, /<script>alert/);
      assert.match(list.text, /value="&lt;script&gt;alert\(1\)&lt;\/script&gt;"/);
      const detail = await get(`/admin/certificates/${x.serial}`, admin);
      assertPage(detail, 200);
      assert.doesNotMatch(detail.text, /<script>alert/);
      // RFC 4514 escapes < and > with a backslash; html.ts then escapes them for HTML.
      assert.match(detail.text, /CN=\\?&lt;script\\?&gt;alert\(1\)\\?&lt;\/script\\?&gt;/);
    });

    it("certificates: search, sort links, status filter and 50 per page", async () => {
      await Promise.all(Array.from({ length: 52 }, (_, i) => issueId(`fleet-${String(i).padStart(2, "0")}`)));
      const first = await get("/admin/certificates?q=fleet-&sort=name&dir=asc", admin);
      assertPage(first, 200);
      assert.match(first.text, /52 matching certificates/);
      assert.equal((first.text.match(/<tr>\n<td data-label="Name">/g) ?? []).length, 50);
      assert.match(first.text, />fleet-00</);
      assert.doesNotMatch(first.text, />fleet-50</);
      assert.match(first.text, /Page 1 of 2/);
      assert.match(
        first.text,
        /href="\/admin\/certificates\?q=fleet-&amp;sort=name&amp;dir=asc&amp;page=2" rel="next"/,
      );
      const second = await get("/admin/certificates?q=fleet-&sort=name&dir=asc&page=2", admin);
      assert.match(second.text, />fleet-50</);
      assert.match(second.text, />fleet-51</);
      assert.match(second.text, /rel="prev"/);
      // The active column offers the other direction.
      assert.match(first.text, /aria-sort="ascending"><a href="[^"]*sort=name&amp;dir=desc/);
      const desc = await get("/admin/certificates?q=fleet-&sort=name&dir=desc", admin);
      assert.ok(desc.text.indexOf(">fleet-51<") < desc.text.indexOf(">fleet-50<"));
      const none = await get("/admin/certificates?view=revoked&q=fleet-", admin);
      assert.match(none.text, /No certificate matches/);
      // Unknown values fall back to the defaults rather than failing.
      assertPage(await get("/admin/certificates?sort=bogus&dir=up&page=-3&view=x", admin), 200);
    });

    it("detail: subject, issuer, SANs, validity, key, extensions, both fingerprints, chain, PEM", async () => {
      const res = await get(`/admin/certificates/${alice.serial}`, admin);
      assertPage(res, 200);
      const leaf = parseCertificates(alice.cert)[0];
      assert.ok(leaf);
      for (const text of [
        "Subject",
        "Issuer",
        "email:alice@acme.test",
        "Not before",
        "Not after",
        "ec-p256",
        "clientAuth",
        "digitalSignature",
        "SHA-1",
        leaf.fingerprint.toUpperCase().replace(/(..)(?=.)/g, "$1:"),
        "BEGIN CERTIFICATE",
        "not revoked",
      ])
        assert.ok(res.text.includes(text), `shows ${text}`);
      assert.match(res.text, new RegExp(`href="/admin/certificates/${server.ca.intermediate.serial}"`));
      const pem = await get(`/admin/certificates/${alice.serial}.pem`, admin);
      assert.equal(pem.status, 200);
      assert.match(String(pem.headers["content-type"]), /^application\/x-pem-file/);
      assert.match(String(pem.headers["content-disposition"]), /^attachment; filename="alice-/);
      assert.equal(parseCertificates(pem.text)[0]?.serial, alice.serial);
      assertPage(await get("/admin/certificates/00ff00ff", admin), 404);
      assertPage(await get("/admin/certificates/not-hex", admin), 404);
      assertPage(await get("/admin/no-such-page", admin), 404);
      assertPage(await get("/admin/no-such-page"), 401);
    });

    it("tokens: creates one (shown once, with its link) and lists it", async () => {
      const res = await submit("/admin/tokens", "/admin/tokens", {
        name: "build-01",
        profile: "server",
        sans: "dns:build-01.acme.test, ip:10.0.0.7",
        validity: "1h",
      });
      assertPage(res, 201);
      const token = secretOf(res.text, "token-text");
      assert.match(token, /^mtls_[0-9a-f]{16}\./);
      assert.equal(secretOf(res.text, "enroll-link"), `${api}/enroll/${token}`);
      const again = await get("/admin/tokens", admin);
      assert.ok(again.text.includes(token.slice(5, 21)), "the list shows the id");
      assert.ok(!again.text.includes(token), "but never the secret");
      assert.match(again.text, /build-01\.acme\.test/);
      const bad = await submit("/admin/tokens", "/admin/tokens", {
        name: "web",
        profile: "server",
        sans: "",
      });
      assertPage(bad, 400);
      assert.match(bad.text, /needs at least one DNS name or IP/);
    });

    it("audit: newest first, filters, and the hash-chain verdict", async () => {
      const res = await get("/admin/audit", admin);
      assertPage(res, 200);
      assert.match(
        res.text,
        /<div id="audit-verdict"><div class="banner ok" role="status"><strong>Hash chain verified<\/strong>/,
      );
      const seqs = [...res.text.matchAll(/<td data-label="#">(\d+)<\/td>/g)].map((m) => Number(m[1]));
      assert.ok(seqs.length > 1);
      assert.deepEqual(
        seqs,
        [...seqs].sort((a, b) => b - a),
      );
      const filtered = await get("/admin/audit?action=token.create", admin);
      const actions = [...filtered.text.matchAll(/<td data-label="Action">([^<]+)<\/td>/g)].map((m) => m[1]);
      assert.ok(actions.length >= 1);
      assert.ok(actions.every((a) => a === "token.create"));
      assert.match(filtered.text, new RegExp(`api:${admin.serial}`));
    });
  });

  describe("forms and CSRF", () => {
    const sameOrigin = () => ({ origin: new URL(api).origin, "sec-fetch-site": "same-origin" });

    it("refuses a state-changing form without the token, with a wrong one, or with another admin's", async () => {
      const fields = { name: "csrf-victim", delivery: "p12" };
      assertPage(await post("/admin/issue", fields, admin, sameOrigin()), 403);
      assertPage(await post("/admin/issue", { ...fields, _csrf: "x".repeat(43) }, admin, sameOrigin()), 403);
      // alice cannot open the form, but a token for another fingerprint is worthless anyway.
      const page = (await get("/admin/issue", admin)).text;
      const token = csrfOf(page);
      const other = token.slice(0, -1) + (token.endsWith("A") ? "B" : "A");
      assertPage(await post("/admin/issue", { ...fields, _csrf: other }, admin, sameOrigin()), 403);
      const found = await server.ca.store.findCertificates({ name: "csrf-victim" });
      assert.equal(found.length, 0, "nothing was issued");
    });

    it("refuses a form posted from another site even with the right token", async () => {
      const token = csrfOf((await get("/admin/issue", admin)).text);
      const fields = { name: "cross-site", delivery: "p12", _csrf: token };
      const r1 = await post("/admin/issue", fields, admin, { origin: "https://evil.example" });
      assertPage(r1, 403);
      assert.match(r1.text, /only be sent from a page of this site/);
      assertPage(await post("/admin/issue", fields, admin, { "sec-fetch-site": "cross-site" }), 403);
      assertPage(await post("/admin/issue", fields, admin, { origin: "null" }), 403);
      assertPage(
        await post("/admin/issue", fields, admin, {
          origin: "https://evil.example",
          "sec-fetch-site": "same-site",
        }),
        403,
      );
      assert.equal((await server.ca.store.findCertificates({ name: "cross-site" })).length, 0);
    });

    it("accepts Origin: null with Sec-Fetch-Site: same-origin (what browsers send under no-referrer)", async () => {
      const token = csrfOf((await get("/admin/issue", admin)).text);
      const res = await post(
        "/admin/issue",
        { name: "via-chromium", delivery: "link", _csrf: token },
        admin,
        {
          origin: "null",
          "sec-fetch-site": "same-origin",
        },
      );
      assertPage(res, 200);
      assert.match(res.text, /id="enroll-link"/);
    });

    it("refuses a form from a non-admin with the 403 page before reading it", async () => {
      assertPage(await post("/admin/issue", { name: "x" }, alice, sameOrigin()), 403);
      assertPage(await post("/admin/issue", { name: "x" }, undefined, sameOrigin()), 401);
    });

    it("issues a .p12: the password shown once, the file downloadable once", async () => {
      const res = await submit("/admin/issue", "/admin/issue", {
        name: "carol",
        email: "carol@acme.test",
        spiffe: "spiffe://acme.test/user/carol",
        ttl: "7d",
        delivery: "p12",
      });
      assertPage(res, 200);
      const password = secretOf(res.text, "p12-password");
      const m = /href="(\/enroll\/download\/[A-Za-z0-9_-]{43})"/.exec(res.text);
      assert.ok(m);
      const file = await get(m[1] as string);
      assert.equal(file.status, 200);
      assert.equal(file.headers["content-type"], "application/x-pkcs12");
      assert.equal(file.headers["content-disposition"], 'attachment; filename="carol.p12"');
      assert.equal(file.headers["cache-control"], "no-store");
      const p12 = parsePkcs12(new Uint8Array(file.body), password);
      assert.ok(p12.privateKey);
      const leaf = parseCertificates(p12.certificates[0] as Uint8Array)[0];
      assert.ok(leaf);
      assert.deepEqual(
        leaf.sans.map((s) => `${s.type}:${s.value}`),
        ["email:carol@acme.test", "uri:spiffe://acme.test/user/carol"],
      );
      assert.ok(Math.abs(leaf.notAfter.getTime() - leaf.notBefore.getTime() - 7 * 86_400_000) < 120_000);
      assert.equal(p12.certificates.length, 2, "leaf and intermediate");
      assertPage(await get(m[1] as string), 404);
      const events = await server.ca.store.listAuditPage({ limit: 5, action: "cert.issue" });
      assert.equal(events[0]?.actor, `api:${admin.serial}`);
    });

    it("puts a bad field back into the form with the reason", async () => {
      const res = await submit("/admin/issue", "/admin/issue", { name: "bad name!", delivery: "link" });
      assertPage(res, 400);
      assert.match(res.text, /invalid name/);
      assert.match(res.text, /value="bad name!"/);
    });

    it("revokes with a reason and a confirmation", async () => {
      const dave = await issueId("dave");
      const form = await get(`/admin/certificates/${dave.serial}/revoke`, admin);
      assertPage(form, 200);
      assert.match(form.text, /<select id="reason" name="reason">/);
      assert.match(form.text, /type="checkbox" id="confirm" name="confirm"/);
      assert.match(form.text, />Revoke certificate</);
      const token = csrfOf(form.text);
      const unconfirmed = await post(
        `/admin/certificates/${dave.serial}/revoke`,
        { _csrf: token, reason: "keyCompromise" },
        admin,
        sameOrigin(),
      );
      assertPage(unconfirmed, 400);
      assert.equal((await server.ca.store.getCertificate(dave.serial))?.status, "valid");
      const done = await post(
        `/admin/certificates/${dave.serial}/revoke`,
        { _csrf: token, reason: "keyCompromise", confirm: "yes" },
        admin,
        sameOrigin(),
      );
      assert.equal(done.status, 303);
      assert.equal(done.headers.location, `/admin/certificates/${dave.serial}`);
      const rec = await server.ca.store.getCertificate(dave.serial);
      assert.equal(rec?.status, "revoked");
      assert.equal(rec?.revocationReason, "keyCompromise");
      const detail = await get(`/admin/certificates/${dave.serial}`, admin);
      assert.match(detail.text, /<strong>Revoked<\/strong>/);
      const [ev] = await server.ca.store.listAuditPage({ limit: 1, action: "cert.revoke" });
      assert.equal(ev?.actor, `api:${admin.serial}`);
      assert.equal(ev?.subject, dave.serial);
      // The CA's own certificates are not revoked from the console.
      assertPage(await get(`/admin/certificates/${server.ca.intermediate.serial}/revoke`, admin), 403);
    });
  });

  describe("enrollment portal", () => {
    /** Makes a one-time link through the issue form, as an admin would. */
    const newLink = async (name: string): Promise<string> => {
      const res = await submit("/admin/issue", "/admin/issue", {
        name,
        email: `${name}@acme.test`,
        delivery: "link",
      });
      assertPage(res, 200);
      const link = secretOf(res.text, "enroll-link");
      assert.ok(link.startsWith(`${api}/enroll/mtls_`));
      return new URL(link).pathname;
    };

    it("link → explanation → create → download once → the link says it was used", async () => {
      const path = await newLink("erin");
      const intro = await get(path);
      assertPage(intro, 200);
      assert.match(intro.text, /Get your certificate/);
      assert.match(intro.text, /<strong>erin<\/strong>/);
      assert.match(intro.text, /name="passphrase"/);
      assert.match(intro.text, />Create my certificate</);
      const created = await post(path, { _csrf: csrfOf(intro.text), passphrase: "" }, undefined, {
        origin: new URL(api).origin,
      });
      assertPage(created, 200);
      const password = secretOf(created.text, "p12-password");
      for (const platform of ["Chrome or Edge", "Firefox", "Mac", "Windows", "Android", "iPhone"])
        assert.ok(created.text.includes(platform), `install steps for ${platform}`);
      const m = /href="(\/enroll\/download\/[A-Za-z0-9_-]{43})"/.exec(created.text);
      assert.ok(m);
      // A HEAD (link checker, preview) does not spend the one download.
      assert.equal((await send(api + (m[1] as string), { ca: rootPem, method: "HEAD" })).status, 404);
      const file = await get(m[1] as string);
      assert.equal(file.status, 200);
      assert.equal(file.headers["content-type"], "application/x-pkcs12");
      assert.equal(file.headers["content-disposition"], 'attachment; filename="erin.p12"');
      const p12 = parsePkcs12(new Uint8Array(file.body), password);
      assert.match(p12.encryption, /AES-256/i);
      const leaf = parseCertificates(p12.certificates[0] as Uint8Array)[0];
      assert.equal(leaf?.subject.includes("CN=erin"), true);
      const rec = await server.ca.store.getCertificate(leaf?.serial as string);
      assert.equal(rec?.status, "valid");
      assertPage(await get(m[1] as string), 404);
      const reused = await get(path);
      assertPage(reused, 410);
      assert.match(reused.text, /already been used/);
      const repost = await post(path, { _csrf: csrfOf(intro.text) });
      assertPage(repost, 410);

      // The certificate from the download signs in: /check says valid.
      const erin: Identity = {
        cert: pemEncode("CERTIFICATE", p12.certificates[0] as Uint8Array),
        key: pemEncode("PRIVATE KEY", p12.privateKey as Uint8Array),
        serial: leaf?.serial as string,
      };
      const check = await get("/check", erin);
      assertPage(check, 200);
      assert.match(check.text, /data-verdict="valid"/);
      assert.match(check.text, /erin/);
    });

    it("keeps the link's secret and the download id out of the log", async () => {
      const path = await newLink("ivan");
      const intro = await get(path);
      const created = await post(path, { _csrf: csrfOf(intro.text) });
      const download = /href="\/enroll\/download\/([A-Za-z0-9_-]{43})"/.exec(created.text)?.[1];
      assert.ok(download);
      assert.equal((await get(`/enroll/download/${download}`)).status, 200);
      const secret = path.split(".").at(-1) as string;
      const log = logLines.join("");
      assert.match(
        log,
        new RegExp(`"path":"/enroll/${path.slice(8, 30).replace(".", "\\.")}\\[redacted\\]"`),
      );
      assert.match(log, /"path":"\/enroll\/download\/\[redacted\]"/);
      assert.ok(!log.includes(secret), "the secret is not logged");
      assert.ok(!log.includes(download), "the download id is not logged");
    });

    it("takes a passphrase of the person's choosing and the legacy format", async () => {
      const path = await newLink("frank");
      const intro = await get(path);
      const short = await post(path, { _csrf: csrfOf(intro.text), passphrase: "short" });
      assertPage(short, 400);
      assert.match(short.text, /Choose a password of 10/);
      const created = await post(path, {
        _csrf: csrfOf(intro.text),
        passphrase: "correct horse battery",
        legacy: "yes",
      });
      assertPage(created, 200);
      assert.doesNotMatch(created.text, /id="p12-password"/, "a chosen passphrase is not echoed");
      const m = /href="(\/enroll\/download\/[A-Za-z0-9_-]{43})"/.exec(created.text);
      const file = await get(m?.[1] as string);
      const p12 = parsePkcs12(new Uint8Array(file.body), "correct horse battery");
      assert.match(p12.encryption, /3DES|TripleDES/i);
    });

    it("points links at the CA's https public URL, else at the address the admin used", async () => {
      const saved = server.ca.settings.publicUrl;
      try {
        server.ca.settings.publicUrl = "https://ca.acme.test:9443/";
        const viaPublic = await submit("/admin/issue", "/admin/issue", {
          name: "pub-https",
          delivery: "link",
        });
        assert.match(
          secretOf(viaPublic.text, "enroll-link"),
          /^https:\/\/ca\.acme\.test:9443\/enroll\/mtls_/,
        );
        // The browser behind that URL sends its origin; the form is accepted from there too.
        const token = csrfOf((await get("/admin/issue", admin)).text);
        const fromProxy = await post(
          "/admin/issue",
          { name: "pub-origin", delivery: "link", _csrf: token },
          admin,
          {
            origin: "https://ca.acme.test:9443",
          },
        );
        assertPage(fromProxy, 200);
        // An http public URL leads to the plain listener, which has no pages: not used for links.
        server.ca.settings.publicUrl = "http://ca.acme.test";
        const viaHost = await submit("/admin/issue", "/admin/issue", { name: "pub-http", delivery: "link" });
        assert.ok(secretOf(viaHost.text, "enroll-link").startsWith(`${api}/enroll/mtls_`));
      } finally {
        server.ca.settings.publicUrl = saved;
      }
    });

    it("refuses the enrollment form without its token or from another site", async () => {
      const path = await newLink("grace");
      const intro = await get(path);
      assertPage(await post(path, { passphrase: "" }), 403);
      assertPage(
        await post(path, { _csrf: csrfOf(intro.text) }, undefined, { "sec-fetch-site": "cross-site" }),
        403,
      );
      // The link is still unused.
      assertPage(await get(path), 200);
    });

    it("says clearly when a link is unknown (404) or expired (410)", async () => {
      const unknown = await get(`/enroll/mtls_0123456789abcdef.${"A".repeat(43)}`);
      assertPage(unknown, 404);
      assert.match(unknown.text, /not valid/);
      assertPage(await get("/enroll/garbage"), 404);
      const t = await server.ca.store.findTokens();
      assert.ok(t.length);
      const created = await server.ca.issue({ profile: "client", name: "dummy", sans: [], actor: "test" });
      assert.ok(created);
      const { createToken } = await import("../../ca/index.js");
      const short = await createToken(
        server.ca,
        { name: "late", profile: "client", sans: [] },
        { validForMs: 1, actor: "test" },
      );
      await new Promise((r) => setTimeout(r, 20));
      const expired = await get(`/enroll/${short.token}`);
      assertPage(expired, 410);
      assert.match(expired.text, /has expired/);
    });
  });

  describe("check my certificate", () => {
    it("says none, not ours, valid and revoked", async () => {
      const none = await get("/check");
      assertPage(none, 200);
      assert.match(none.text, /data-verdict="none"/);
      assert.match((await get("/check", foreign)).text, /data-verdict="not-ours"/);
      const heidi = await issueId("heidi");
      assert.match((await get("/check", heidi)).text, /data-verdict="valid"/);
      await server.ca.revoke([heidi.serial], "superseded", "test");
      const revoked = await get("/check", heidi);
      assert.match(revoked.text, /data-verdict="revoked"/);
      assert.match(revoked.text, /has been revoked/);
    });
  });
  // Last: it breaks the chain for good.
  describe("a tampered audit log", () => {
    it("is reported prominently as broken, at the first event that does not verify", async () => {
      const Database = (await import("better-sqlite3")).default;
      const db = new Database(paths.database);
      try {
        db.prepare("update audit_events set actor = 'someone-else' where seq = 3").run();
      } finally {
        db.close();
      }
      const res = await get("/admin/audit", admin);
      assertPage(res, 200);
      assert.match(
        res.text,
        /<div id="audit-verdict"><div class="banner bad" role="alert"><strong>Hash chain broken<\/strong> Event #3 does not verify/,
      );
    });
  });
});
