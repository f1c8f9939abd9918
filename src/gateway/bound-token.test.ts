import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT, UnsecuredJWT } from "jose";
import { isMtlsError } from "../errors.js";
import {
  type AccessTokenSpec,
  AccessTokenVerifier,
  bearerTokenOf,
  certificateThumbprint,
  closeRouteTokens,
  parseJwks,
  type TokenVerdict,
  tokenSpecFromOptions,
} from "./bound-token.js";

const ISSUER = "https://as.acme.test";
const AUDIENCE = "https://api.acme.test";
const NOW = new Date("2026-06-01T12:00:00Z");
const nowS = Math.floor(NOW.getTime() / 1000);

type Signer = {
  kid: string;
  alg: string;
  privateKey: Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];
  jwk: JWK;
};

async function signer(kid: string, alg = "ES256"): Promise<Signer> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  return { kid, alg, privateKey, jwk };
}

/** A token as an authorization server issues it: iss, aud, sub, jti, iat/exp around NOW. */
function token(
  s: Signer,
  claims: JWTPayload = {},
  opts: { exp?: number; iat?: number } = {},
): Promise<string> {
  return new SignJWT({ jti: randomBytes(8).toString("hex"), ...claims })
    .setProtectedHeader({ alg: s.alg, kid: s.kid, typ: "at+jwt" })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject("alice")
    .setIssuedAt(opts.iat ?? nowS - 60)
    .setExpirationTime(opts.exp ?? nowS + 600)
    .sign(s.privateKey);
}

const bearer = (t: string) => [`Bearer ${t}`];

function refused(v: TokenVerdict, reason: string, detail?: RegExp): void {
  assert.equal(v.ok, false, JSON.stringify(v));
  if (v.ok) return;
  assert.equal(v.reason, reason, v.detail);
  if (detail) assert.match(v.detail, detail);
}

let dir: string;
let es: Signer;
let rs: Signer;
let jwksFile: string;
const aliceDer = randomBytes(600);
const malloryDer = randomBytes(600);
const open: AccessTokenVerifier[] = [];

function verifier(spec: Partial<AccessTokenSpec> = {}): AccessTokenVerifier {
  const v = new AccessTokenVerifier(
    { bind: "certificate", jwks: jwksFile, issuer: ISSUER, audience: AUDIENCE, ...spec },
    "route */bound/",
  );
  open.push(v);
  return v;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "mtls-bound-token-"));
  es = await signer("es-1");
  rs = await signer("rs-1", "RS256");
  jwksFile = join(dir, "jwks.json");
  writeFileSync(jwksFile, JSON.stringify({ keys: [es.jwk, rs.jwk] }));
});

after(() => {
  for (const v of open) v.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("certificateThumbprint", () => {
  it("is base64url SHA-256 without padding (RFC 8705 x5t#S256)", () => {
    // SHA-256("abc"), a FIPS 180-2 test vector, in base64url.
    assert.equal(certificateThumbprint(Buffer.from("abc")), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
  });
});

describe("bearerTokenOf (RFC 6750 §2.1)", () => {
  it("takes the token of one Bearer header, scheme in any case", () => {
    assert.deepEqual(bearerTokenOf(["Bearer abc.def-_~+/=="]), { token: "abc.def-_~+/==" });
    assert.deepEqual(bearerTokenOf(["bearer   abc"]), { token: "abc" });
  });

  it("no header or another scheme is missing; bad syntax or two headers malformed", () => {
    assert.equal((bearerTokenOf([]) as { reason: string }).reason, "token_missing");
    assert.equal((bearerTokenOf(["Basic YTpi"]) as { reason: string }).reason, "token_missing");
    assert.equal((bearerTokenOf(["Bearer"]) as { reason: string }).reason, "token_malformed");
    assert.equal((bearerTokenOf(["Bearer a b"]) as { reason: string }).reason, "token_malformed");
    assert.equal((bearerTokenOf(["Bearer a=b"]) as { reason: string }).reason, "token_malformed");
    assert.equal((bearerTokenOf(["Bearer a", "Bearer b"]) as { reason: string }).reason, "token_malformed");
  });
});

describe("AccessTokenVerifier, bind certificate (RFC 8705)", () => {
  it("accepts a token bound to this connection's certificate and reports sub, iss, jti", async () => {
    const v = verifier();
    const t = await token(es, { jti: "t-1", cnf: { "x5t#S256": certificateThumbprint(aliceDer) } });
    const got = await v.verify(bearer(t), aliceDer, NOW);
    assert.deepEqual(got, { ok: true, claims: { sub: "alice", iss: ISSUER, jti: "t-1", bound: true } });
    // RS256 from the same JWKS.
    const r = await token(rs, { cnf: { "x5t#S256": certificateThumbprint(aliceDer) } });
    assert.equal((await v.verify(bearer(r), aliceDer, NOW)).ok, true);
  });

  it("refuses the same token presented with another certificate, or none", async () => {
    const v = verifier();
    const t = await token(es, { jti: "t-2", cnf: { "x5t#S256": certificateThumbprint(aliceDer) } });
    const stolen = await v.verify(bearer(t), malloryDer, NOW);
    refused(stolen, "token_binding", /bound to the certificate with x5t#S256 .*this connection's is/);
    assert.deepEqual(!stolen.ok && stolen.claims, { sub: "alice", iss: ISSUER, jti: "t-2", bound: true });
    refused(await v.verify(bearer(t), undefined, NOW), "token_binding", /none was presented/);
  });

  it("refuses a token without cnf x5t#S256 on a bound route", async () => {
    const v = verifier();
    refused(await v.verify(bearer(await token(es)), aliceDer, NOW), "token_invalid", /not certificate-bound/);
    const otherCnf = await token(es, { cnf: { jkt: "abc" } });
    refused(await v.verify(bearer(otherCnf), aliceDer, NOW), "token_invalid", /not certificate-bound/);
  });

  it("refuses expired tokens (beyond the clock tolerance) by the injected clock", async () => {
    const v = verifier();
    const cnf = { "x5t#S256": certificateThumbprint(aliceDer) };
    const expired = await token(es, { cnf }, { exp: nowS - 31 });
    refused(await v.verify(bearer(expired), aliceDer, NOW), "token_invalid", /expired at/);
    // Within the default 30 s tolerance.
    const justExpired = await token(es, { cnf }, { exp: nowS - 20 });
    assert.equal((await v.verify(bearer(justExpired), aliceDer, NOW)).ok, true);
    // No tolerance.
    refused(
      await verifier({ clockToleranceMs: 0 }).verify(bearer(justExpired), aliceDer, NOW),
      "token_invalid",
    );
    // The same token an hour earlier by the clock is fine.
    assert.equal((await v.verify(bearer(expired), aliceDer, new Date(NOW.getTime() - 3_600_000))).ok, true);
    // A token without exp never expires: refused.
    const noExp = await new SignJWT({ cnf })
      .setProtectedHeader({ alg: "ES256", kid: es.kid })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .sign(es.privateKey);
    refused(await v.verify(bearer(noExp), aliceDer, NOW), "token_invalid", /"exp"/);
  });

  it("refuses a wrong issuer or audience", async () => {
    const v = verifier();
    const cnf = { "x5t#S256": certificateThumbprint(aliceDer) };
    const wrongIss = await new SignJWT({ cnf })
      .setProtectedHeader({ alg: "ES256", kid: es.kid })
      .setIssuer("https://evil.test")
      .setAudience(AUDIENCE)
      .setExpirationTime(nowS + 600)
      .sign(es.privateKey);
    refused(await v.verify(bearer(wrongIss), aliceDer, NOW), "token_invalid", /claim "iss"/);
    const wrongAud = await new SignJWT({ cnf })
      .setProtectedHeader({ alg: "ES256", kid: es.kid })
      .setIssuer(ISSUER)
      .setAudience("https://other.acme.test")
      .setExpirationTime(nowS + 600)
      .sign(es.privateKey);
    refused(await v.verify(bearer(wrongAud), aliceDer, NOW), "token_invalid", /claim "aud"/);
    // Without issuer/audience options, any is accepted.
    const any = verifier({ issuer: undefined, audience: undefined } as Partial<AccessTokenSpec>);
    assert.equal((await any.verify(bearer(wrongAud), aliceDer, NOW)).ok, true);
  });

  it("refuses alg none, HS256 (even keyed with the public JWK's bytes) and a key not in the JWKS", async () => {
    const v = verifier();
    const cnf = { "x5t#S256": certificateThumbprint(aliceDer) };
    const unsecured = new UnsecuredJWT({ cnf, sub: "alice" })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime(nowS + 600)
      .encode();
    refused(await v.verify(bearer(unsecured), aliceDer, NOW), "token_invalid");
    const hs = await new SignJWT({ cnf })
      .setProtectedHeader({ alg: "HS256", kid: es.kid })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime(nowS + 600)
      .sign(new TextEncoder().encode(JSON.stringify(es.jwk)));
    refused(await v.verify(bearer(hs), aliceDer, NOW), "token_invalid", /alg/i);
    const stranger = await signer("es-1"); // same kid, another key
    refused(
      await v.verify(bearer(await token(stranger, { cnf })), aliceDer, NOW),
      "token_invalid",
      /signature/,
    );
    const unknownKid = await signer("nobody");
    refused(
      await v.verify(bearer(await token(unknownKid, { cnf })), aliceDer, NOW),
      "token_invalid",
      /no key/,
    );
    refused(await v.verify(bearer("not.a.jwt"), aliceDer, NOW), "token_invalid");
  });

  it("accepts only the configured algorithms", async () => {
    const v = verifier({ algorithms: ["RS256"] });
    const cnf = { "x5t#S256": certificateThumbprint(aliceDer) };
    refused(await v.verify(bearer(await token(es, { cnf })), aliceDer, NOW), "token_invalid", /alg/i);
    assert.equal((await v.verify(bearer(await token(rs, { cnf })), aliceDer, NOW)).ok, true);
  });

  it("missing and malformed Authorization headers", async () => {
    const v = verifier();
    refused(await v.verify([], aliceDer, NOW), "token_missing");
    refused(await v.verify(["Basic YTpi"], aliceDer, NOW), "token_missing");
    refused(await v.verify(["Bearer a b"], aliceDer, NOW), "token_malformed");
  });
});

describe("AccessTokenVerifier, bind none (plain bearer)", () => {
  it("accepts a valid token whoever presents it: the replay a bearer token allows", async () => {
    const v = verifier({ bind: "none" });
    const t = await token(es, { cnf: { "x5t#S256": certificateThumbprint(aliceDer) } });
    assert.equal((await v.verify(bearer(t), aliceDer, NOW)).ok, true);
    assert.equal((await v.verify(bearer(t), malloryDer, NOW)).ok, true);
    assert.equal((await v.verify(bearer(t), undefined, NOW)).ok, true);
    // Signature, expiry, issuer and audience still hold.
    refused(
      await v.verify(bearer(await token(es, {}, { exp: nowS - 120 })), undefined, NOW),
      "token_invalid",
    );
  });
});

describe("JWKS file", () => {
  it("is re-read when it changes (key rotation); a bad file leaves the keys in force", async () => {
    const file = join(dir, "rotating.json");
    writeFileSync(file, JSON.stringify({ keys: [es.jwk] }));
    const v = verifier({ jwks: file, bind: "none" });
    const errors: Error[] = [];
    let reloads = 0;
    v.watch({ onReload: () => reloads++, onError: (e) => errors.push(e) });
    const next = await signer("es-2");
    const newToken = await token(next);
    refused(await v.verify(bearer(newToken), undefined, NOW), "token_invalid", /no key/);
    // The authorization server rotates: the new key published, the old one withdrawn.
    writeFileSync(file, JSON.stringify({ keys: [next.jwk] }));
    const end = Date.now() + 5000;
    while (reloads === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    assert.equal(reloads, 1, "the watcher reloaded the file");
    assert.equal((await v.verify(bearer(newToken), undefined, NOW)).ok, true);
    refused(await v.verify(bearer(await token(es)), undefined, NOW), "token_invalid", /no key/);
    // A broken file is reported and ignored.
    writeFileSync(file, "{ not json");
    assert.equal(await v.reload(), false);
    assert.equal(errors.length, 1);
    assert.match(errors[0]?.message ?? "", /not JSON/);
    assert.equal((await v.verify(bearer(newToken), undefined, NOW)).ok, true);
    v.close();
  });

  it("is re-read on the interval too", async () => {
    const file = join(dir, "polled.json");
    writeFileSync(file, JSON.stringify({ keys: [es.jwk] }));
    const v = verifier({ jwks: file, bind: "none", reloadIntervalMs: 50 });
    let reloads = 0;
    v.watch({ onReload: () => reloads++ });
    writeFileSync(file, JSON.stringify({ keys: [es.jwk, rs.jwk] }));
    const end = Date.now() + 5000;
    while (reloads === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    assert.equal(reloads, 1);
    v.close();
  });

  it("refuses at build time: missing file, not a JWKS, private keys", () => {
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        assert.ok(isMtlsError(err), String(err));
        return `${err.code}: ${err.message}`;
      }
      assert.fail("no error");
    };
    assert.match(
      code(() => verifier({ jwks: join(dir, "nope.json") })),
      /^E_IO: route \*\/bound\/: cannot read the JWKS file .*ENOENT/,
    );
    assert.match(
      code(() => parseJwks("[]", "f")),
      /^E_BAD_INPUT: f: not a JWKS/,
    );
    assert.match(
      code(() => parseJwks('{"keys":[{"x":1}]}', "f")),
      /keys\[0\] is not a JWK/,
    );
    assert.match(
      code(() => parseJwks(JSON.stringify({ keys: [{ ...es.jwk, d: "secret" }] }), "f")),
      /private or secret key/,
    );
    assert.match(
      code(() => parseJwks(JSON.stringify({ keys: [{ kty: "oct", k: "c2VjcmV0" }] }), "f")),
      /private or secret key/,
    );
  });
});

describe("options", () => {
  it("refuses alg none and HS*, plain-HTTP JWKS URLs off loopback, a bad binding", () => {
    for (const algorithms of [["none"], ["HS256"], ["ES256", "hs512"]]) {
      assert.throws(() => verifier({ algorithms }), /never accepted/);
    }
    assert.throws(() => verifier({ algorithms: ["XYZ"] }), /unknown algorithm/);
    assert.throws(
      () => verifier({ jwks: "http://as.acme.test/jwks.json" }),
      (e) => isMtlsError(e, "E_USAGE"),
    );
    assert.throws(() => verifier({ jwks: "ftp://127.0.0.1/jwks.json" }), /only https/);
    assert.throws(() => verifier({ bind: "maybe" as "none" }), /certificate or none/);
    assert.throws(() => verifier({ clockToleranceMs: -1 }), /tolerance/);
    // https anywhere, http on loopback: accepted (nothing fetched until a token comes).
    verifier({ jwks: "https://as.acme.test/jwks.json" });
    verifier({ jwks: "http://127.0.0.1:1/jwks.json" });
  });

  it("reads --route token options", () => {
    const m = (o: Record<string, string>) => new Map(Object.entries(o));
    assert.equal(tokenSpecFromOptions(m({}), "r"), undefined);
    assert.deepEqual(
      tokenSpecFromOptions(
        m({
          token: "bound",
          jwks: "/etc/jwks.json",
          issuer: ISSUER,
          audience: AUDIENCE,
          algorithms: "ES256, RS256",
          "clock-tolerance": "1m",
          "jwks-reload": "1h",
        }),
        "r",
      ),
      {
        bind: "certificate",
        jwks: "/etc/jwks.json",
        issuer: ISSUER,
        audience: AUDIENCE,
        algorithms: ["ES256", "RS256"],
        clockToleranceMs: 60_000,
        reloadIntervalMs: 3_600_000,
      },
    );
    assert.deepEqual(tokenSpecFromOptions(m({ token: "bearer", jwks: "j", "clock-tolerance": "0" }), "r"), {
      bind: "none",
      jwks: "j",
      clockToleranceMs: 0,
    });
    assert.throws(() => tokenSpecFromOptions(m({ jwks: "j" }), "r"), /jwks goes with token=bound/);
    assert.throws(() => tokenSpecFromOptions(m({ token: "bound" }), "r"), /needs jwks=/);
    assert.throws(() => tokenSpecFromOptions(m({ token: "maybe", jwks: "j" }), "r"), /bound .* or bearer/);
  });

  it("closeRouteTokens closes the verifiers not kept", async () => {
    const a = verifier({ bind: "none" });
    const b = verifier({ bind: "none" });
    a.watch();
    b.watch();
    closeRouteTokens([{ token: a }, { token: b }, {}], [{ token: b }]);
    // a is closed: reload does nothing; b still watches.
    assert.equal(await a.reload(), false);
    assert.equal((a as unknown as { watcher?: unknown }).watcher, undefined);
    assert.notEqual((b as unknown as { watcher?: unknown }).watcher, undefined);
  });
});

describe("JWKS URL", () => {
  let server: Server;
  let hits = 0;
  let status = 200;
  let url: string;

  before(async () => {
    server = createServer((_req, res) => {
      hits++;
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify({ keys: [es.jwk] }));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
  });

  after(() => new Promise<void>((r) => server.close(() => r())));

  it("fetches the keys once and verifies with them", async () => {
    const v = verifier({ jwks: url, bind: "none" });
    assert.equal((await v.verify(bearer(await token(es)), undefined, NOW)).ok, true);
    assert.equal((await v.verify(bearer(await token(es)), undefined, NOW)).ok, true);
    assert.equal(hits, 1);
  });

  it("an unreachable or failing JWKS endpoint is jwks_unavailable, not a bad token", async () => {
    status = 500;
    const v = verifier({ jwks: url, bind: "none" });
    refused(await v.verify(bearer(await token(es)), undefined, NOW), "jwks_unavailable", /200 OK/);
    status = 200;
    const down = verifier({ jwks: "http://127.0.0.1:1/jwks.json", bind: "none" });
    refused(await down.verify(bearer(await token(es)), undefined, NOW), "jwks_unavailable");
  });
});
