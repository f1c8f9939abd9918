import { TLSSocket } from "node:tls";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { sha256Hex } from "../../pki/certinfo.js";
import type { CertificateRecord } from "../../store/index.js";
import { rateLimit } from "../app.js";
import type { ServerContext } from "../context.js";
import type { UiDeps } from "./deps.js";
import { sendPage } from "./error-page.js";
import { type Html, html } from "./html.js";
import { badge, banner, page, relative, when } from "./layout.js";

/** What the browser presented, judged as the API would judge it (auth.ts). */
export type Presented =
  | { verdict: "none" }
  | {
      verdict: "valid" | "revoked" | "expired" | "not-ours" | "not-valid";
      subject: string;
      issuer: string;
      serial: string;
      notAfter: Date;
      record?: CertificateRecord;
    };

/**
 * Which certificate came with this request and what this CA thinks of it: none; not ours (another
 * CA, or not the very certificate our inventory holds); revoked; expired; valid; or our certificate
 * in another state (pending, aborted).
 */
export async function presentedCertificate(req: FastifyRequest, ctx: ServerContext): Promise<Presented> {
  const socket = req.raw.socket;
  if (!(socket instanceof TLSSocket)) return { verdict: "none" };
  const peer = socket.getPeerCertificate(false);
  if (!peer?.raw) return { verdict: "none" };
  const base = {
    subject: peer.subject
      ? Object.entries(peer.subject)
          .map(([k, v]) => `${k}=${v}`)
          .join(", ")
      : "",
    issuer: peer.issuer
      ? Object.entries(peer.issuer)
          .map(([k, v]) => `${k}=${v}`)
          .join(", ")
      : "",
    serial: peer.serialNumber.toLowerCase(),
    notAfter: new Date(peer.valid_to),
  };
  const rec =
    (await ctx.ca.store.getCertificate(base.serial)) ??
    (base.serial.length % 2 === 1 ? await ctx.ca.store.getCertificate(`0${base.serial}`) : undefined);
  if (
    !rec ||
    rec.fingerprint !== sha256Hex(new Uint8Array(peer.raw)) ||
    rec.issuerSerial !== ctx.ca.intermediate.serial
  )
    return { verdict: "not-ours", ...base };
  const withRec = { ...base, serial: rec.serial, record: rec };
  if (rec.status === "revoked") return { verdict: "revoked", ...withRec };
  const now = ctx.clock();
  if (now >= rec.notAfter || now < rec.notBefore) return { verdict: "expired", ...withRec };
  if (rec.status !== "valid") return { verdict: "not-valid", ...withRec };
  return { verdict: "valid", ...withRec };
}

function explainVerdict(p: Presented, now: Date): Html {
  switch (p.verdict) {
    case "none":
      return html`${banner("warn", "Your browser presented no certificate.")}
<p>Either none is installed, or the browser did not offer it to this site. Install the <code>.p12</code> file you downloaded, then <strong>close every window of the browser</strong> and open this page again: browsers remember "no certificate" for a site until they restart.</p>`;
    case "not-ours":
      return html`${banner("bad", "This certificate is not from this certificate authority.")}<p>Your browser presented a certificate, but this CA did not issue it (or not this very one). If you have several, restart the browser and pick the one from this CA when asked.</p>`;
    case "revoked":
      return html`${banner("bad", "This certificate has been revoked.", html`on ${when(p.record?.revokedAt)}. It no longer opens anything; ask your administrator for a new one.`)}`;
    case "expired":
      return html`${banner("bad", "This certificate has expired.", html`Its validity ended ${when(p.notAfter)}. Ask for a new one.`)}`;
    case "not-valid":
      return html`${banner("warn", "This certificate is not in use.", html`The CA recorded it as ${p.record?.status ?? "unknown"}.`)}`;
    case "valid":
      return html`${banner("ok", "Your certificate works.", html`It is valid until ${when(p.notAfter)} (${relative(p.notAfter, now)}).`)}`;
  }
}

const TONE = { valid: "ok", revoked: "bad", expired: "bad", "not-ours": "bad", "not-valid": "warn" } as const;

/** GET /check: "check my certificate", served under optional mTLS like the whole API listener. */
export function registerCheck(app: FastifyInstance, d: UiDeps): void {
  app.get("/check", async (req, reply) => {
    // Anyone may ask, and each answer reads the store: limited like the other anonymous pages.
    rateLimit(req, d.ctx, "check");
    const p = await presentedCertificate(req, d.ctx);
    const now = d.ctx.clock();
    const details =
      p.verdict === "none"
        ? ""
        : html`<section class="card" aria-labelledby="presented"><h2 id="presented">The certificate your browser presented ${badge(p.verdict === "not-ours" ? "not ours" : p.verdict, TONE[p.verdict])}</h2><dl class="fields">
<dt>Name</dt><dd>${p.record?.name ?? p.subject}</dd>
<dt>Subject</dt><dd>${p.record?.subject ?? p.subject}</dd>
<dt>Issuer</dt><dd>${p.issuer}</dd>
${p.record?.sans.length ? html`<dt>Names</dt><dd>${p.record.sans.join(", ")}</dd>` : ""}
<dt>Serial</dt><dd class="mono">${p.serial}</dd>
<dt>Valid until</dt><dd>${when(p.notAfter)}</dd>
</dl></section>`;
    return sendPage(
      reply,
      200,
      page({
        title: "Check my certificate",
        narrow: true,
        body: html`<h1>Check my certificate</h1><p class="lead">Which certificate your browser shows this site, and whether it is valid.</p><div id="verdict" data-verdict="${p.verdict}">${explainVerdict(p, now)}</div>${details}`,
      }),
    );
  });
}
