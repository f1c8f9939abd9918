import { createHash } from "node:crypto";
import type { FastifyInstance, FastifyReply } from "fastify";
import type { MtlsError } from "../../errors.js";
import { type CertInfo, parseCertificates } from "../../pki/certinfo.js";
import { parseReason, REVOCATION_REASONS, type ReasonName } from "../../pki/crl.js";
import { formatSan } from "../../pki/names.js";
import type { CertificateRecord } from "../../store/index.js";
import { type AdminSession, requireAdmin } from "./admin-guard.js";
import { certStatus } from "./cert-status.js";
import { csrfField, publicOrigins, sendAdminPage, type UiDeps } from "./deps.js";
import { PageError } from "./error-page.js";
import { field, formBody } from "./forms.js";
import { type Html, html, joinHtml } from "./html.js";
import { badge, banner, relative, when } from "./layout.js";
import { checkForm } from "./security.js";

/** What each RFC 5280 reason means, for the select. */
const REASON_TEXT: Record<ReasonName, string> = {
  unspecified: "Unspecified",
  keyCompromise: "Key compromise: the private key may be known to someone else",
  cACompromise: "CA compromise",
  affiliationChanged: "Affiliation changed: the person or service left",
  superseded: "Superseded: replaced by a new certificate",
  cessationOfOperation: "Cessation of operation: no longer needed",
  certificateHold: "Certificate hold",
  privilegeWithdrawn: "Privilege withdrawn",
  aACompromise: "AA compromise",
};

/** A serial as typed or linked (any case, colons allowed) in the store's form; undefined if not hex. */
function serialOf(text: string): string | undefined {
  const hex = text.replace(/:/g, "").toLowerCase();
  return /^[0-9a-f]{1,40}$/.test(hex) ? hex : undefined;
}

async function findRecord(d: UiDeps, text: string): Promise<CertificateRecord> {
  const serial = serialOf(text);
  const rec = serial
    ? ((await d.ctx.ca.store.getCertificate(serial)) ??
      (serial.length % 2 === 1 ? await d.ctx.ca.store.getCertificate(`0${serial}`) : undefined))
    : undefined;
  if (!rec)
    throw new PageError(
      "E_NOT_FOUND",
      404,
      "No such certificate",
      html`<h1>No such certificate</h1><p>This CA has no certificate with serial <code>${text.slice(0, 64)}</code>.</p><p><a href="/admin/certificates">Back to the certificates</a></p>`,
    );
  return rec;
}

const colonHex = (hex: string) => hex.toUpperCase().replace(/(..)(?=.)/g, "$1:");

/** Leaf, its issuer, that one's issuer: as far as the inventory knows (at most 5 steps). */
async function chainOf(d: UiDeps, rec: CertificateRecord): Promise<CertificateRecord[]> {
  const chain = [rec];
  let cur = rec;
  while (cur.issuerSerial && cur.issuerSerial !== cur.serial && chain.length < 5) {
    const next = await d.ctx.ca.store.getCertificate(cur.issuerSerial);
    if (!next) break;
    chain.push(next);
    cur = next;
  }
  return chain;
}

const list = (items: string[]) =>
  items.length ? joinHtml(items, ", ") : html`<span class="muted">none</span>`;

function extensionsOf(c: CertInfo): Html {
  return html`<dl class="fields">
<dt>Basic constraints</dt><dd>${c.isCa ? `CA${c.pathLen !== undefined ? `, path length ${c.pathLen}` : ""}` : "not a CA"}</dd>
<dt>Key usage</dt><dd>${list(c.keyUsage)}</dd>
<dt>Extended key usage</dt><dd>${list(c.extKeyUsage)}</dd>
<dt>Subject alternative names</dt><dd>${list(c.sans.map(formatSan))}</dd>
<dt>CRL distribution points</dt><dd>${list(c.crlUrls)}</dd>
<dt>OCSP</dt><dd>${list(c.ocspUrls)}</dd>
<dt>Subject key identifier</dt><dd class="mono">${c.subjectKeyId ? colonHex(c.subjectKeyId) : "none"}</dd>
<dt>Authority key identifier</dt><dd class="mono">${c.authorityKeyId ? colonHex(c.authorityKeyId) : "none"}</dd>
</dl>`;
}

const isCaCert = (r: CertificateRecord) => r.profile === "ca-root" || r.profile === "ca-intermediate";

function revokeForm(s: AdminSession, rec: CertificateRecord, error?: string): Html {
  return html`${error ? banner("bad", error) : ""}
<form class="stack card" method="post" action="/admin/certificates/${rec.serial}/revoke">
${csrfField(s.csrf)}
<div class="field"><label for="reason">Reason</label>
<select id="reason" name="reason">${Object.keys(REVOCATION_REASONS).map(
    (r) => html`<option value="${r}">${REASON_TEXT[r as ReasonName]}</option>`,
  )}</select>
<p class="hint">Written into the CRL and OCSP answers. Choose "Key compromise" when the key may have leaked.</p></div>
<div class="field"><label class="check"><input type="checkbox" id="confirm" name="confirm" value="yes"> <span>I understand that <strong>${rec.name}</strong> (serial <code>${rec.serial}</code>) stops working at once and that this cannot be undone.</span></label></div>
<div class="actions"><button class="btn danger" type="submit" data-requires="confirm">Revoke certificate</button><a href="/admin/certificates/${rec.serial}">Cancel</a></div>
</form>`;
}

async function sendPem(reply: FastifyReply, rec: CertificateRecord) {
  return reply
    .header("cache-control", "no-store")
    .header("x-content-type-options", "nosniff")
    .header("content-disposition", `attachment; filename="${rec.name}-${rec.serial}.pem"`)
    .type("application/x-pem-file")
    .send(rec.pem);
}

/** GET /admin/certificates/:serial(.pem), GET+POST /admin/certificates/:serial/revoke. */
export function registerCertificateDetail(app: FastifyInstance, d: UiDeps): void {
  app.get("/admin/certificates/:serial", async (req, reply) => {
    const s = await requireAdmin(req, d.ctx, d.csrf);
    const param = (req.params as { serial: string }).serial;
    if (param.endsWith(".pem")) return sendPem(reply, await findRecord(d, param.slice(0, -4)));
    const rec = await findRecord(d, param);
    const now = d.ctx.clock();
    const cert = parseCertificates(rec.pem)[0] as CertInfo;
    const st = certStatus(rec, now);
    const chain = await chainOf(d, rec);
    const sha1 = createHash("sha1").update(cert.der).digest("hex");
    const revocation =
      rec.status === "revoked"
        ? banner(
            "bad",
            "Revoked",
            html`on ${when(rec.revokedAt)}, reason: <strong>${rec.revocationReason ?? "unspecified"}</strong>. Relying parties learn it from the CRL and OCSP.`,
          )
        : "";
    const body = html`<div class="page-head"><div><h1>${rec.name} ${badge(st.label, st.tone)}</h1>
<p class="lead">${rec.profile} certificate, serial <code>${rec.serial}</code></p></div>
<div class="actions"><a class="btn secondary" href="/admin/certificates/${rec.serial}.pem" download>Download PEM</a>${
      rec.status !== "revoked" && !isCaCert(rec)
        ? html`<a class="btn danger" href="/admin/certificates/${rec.serial}/revoke">Revoke…</a>`
        : ""
    }</div></div>
${revocation}
<div class="grid-2">
<section class="card" aria-labelledby="identity"><h2 id="identity">Identity</h2><dl class="fields">
<dt>Subject</dt><dd>${cert.subject}</dd>
<dt>Issuer</dt><dd>${cert.issuer}</dd>
<dt>SANs</dt><dd>${list(cert.sans.map(formatSan))}</dd>
<dt>Inventory name</dt><dd>${rec.name}</dd>
<dt>Profile</dt><dd>${rec.profile}</dd>
</dl></section>
<section class="card" aria-labelledby="validity"><h2 id="validity">Validity</h2><dl class="fields">
<dt>Not before</dt><dd>${when(cert.notBefore)}</dd>
<dt>Not after</dt><dd>${when(cert.notAfter)} <span class="muted">(${relative(cert.notAfter, now)})</span></dd>
<dt>Status</dt><dd>${badge(st.label, st.tone)}</dd>
<dt>Revocation</dt><dd>${rec.status === "revoked" ? html`revoked ${when(rec.revokedAt)} (${rec.revocationReason ?? "unspecified"})` : "not revoked"}</dd>
<dt>Recorded</dt><dd>${when(rec.createdAt)}</dd>
</dl></section>
</div>
<section class="card" aria-labelledby="key"><h2 id="key">Key and fingerprints</h2><dl class="fields">
<dt>Key type</dt><dd>${cert.keyType}</dd>
<dt>SHA-256</dt><dd class="mono">${colonHex(cert.fingerprint)}</dd>
<dt>SHA-1</dt><dd class="mono">${colonHex(sha1)}</dd>
</dl></section>
<section class="card" aria-labelledby="ext"><h2 id="ext">Extensions</h2>${extensionsOf(cert)}</section>
<section class="card" aria-labelledby="chain"><h2 id="chain">Chain</h2><ol>${chain.map(
      (c) =>
        html`<li>${c.serial === rec.serial ? html`<strong>${c.subject}</strong>` : html`<a href="/admin/certificates/${c.serial}">${c.subject}</a>`} <span class="muted">(${c.profile}, until ${when(c.notAfter)})</span></li>`,
    )}</ol></section>
<section class="card" aria-labelledby="pem"><h2 id="pem">PEM</h2><pre id="pem-text">${rec.pem}</pre>
<div class="actions"><button class="btn secondary" type="button" data-copy="pem-text" hidden>Copy</button><a href="/admin/certificates/${rec.serial}.pem" download>Download ${rec.name}-${rec.serial}.pem</a></div></section>`;
    return sendAdminPage(reply, s, "certificates", `Certificate ${rec.name}`, body);
  });

  const revokePage = (reply: FastifyReply, s: AdminSession, rec: CertificateRecord, error?: string) =>
    sendAdminPage(
      reply,
      s,
      "certificates",
      `Revoke ${rec.name}`,
      html`<h1>Revoke ${rec.name}</h1>
<p class="lead">${rec.subject} · serial <code>${rec.serial}</code> · valid until ${when(rec.notAfter)}</p>
${revokeForm(s, rec, error)}`,
      error ? 400 : 200,
    );

  const refuseCa = (rec: CertificateRecord) => {
    if (isCaCert(rec))
      throw new PageError(
        "E_NOT_AUTHORIZED",
        403,
        "Not from the console",
        html`<h1>Not from the console</h1><p>The CA's own certificates are revoked from the command line (<code>mtls revoke</code>), not through the console.</p><p><a href="/admin/certificates/${rec.serial}">Back</a></p>`,
      );
  };

  app.get("/admin/certificates/:serial/revoke", async (req, reply) => {
    const s = await requireAdmin(req, d.ctx, d.csrf);
    const rec = await findRecord(d, (req.params as { serial: string }).serial);
    refuseCa(rec);
    if (rec.status === "revoked") return reply.redirect(`/admin/certificates/${rec.serial}`, 303);
    return revokePage(reply, s, rec);
  });

  app.post("/admin/certificates/:serial/revoke", async (req, reply) => {
    const s = await requireAdmin(req, d.ctx, d.csrf);
    const form = formBody(req);
    checkForm(req, d.csrf, s.binding, form._csrf, publicOrigins(d.ctx));
    const rec = await findRecord(d, (req.params as { serial: string }).serial);
    refuseCa(rec);
    let reason: ReasonName;
    try {
      reason = parseReason(field(form, "reason") || "unspecified");
    } catch (err) {
      return revokePage(reply, s, rec, (err as MtlsError).message);
    }
    if (field(form, "confirm") === "")
      return revokePage(reply, s, rec, "Tick the box to confirm: revocation cannot be undone.");
    if (rec.status !== "revoked") await d.ctx.ca.revoke([rec.serial], reason, s.actor);
    return reply.redirect(`/admin/certificates/${rec.serial}`, 303);
  });
}
