// The mtls/web example app (docs/web.md): a plain ES module, no framework, no build step.
//
//  1. opens the key store worker (keys live in its IndexedDB, non-extractable);
//  2. enrolls: a new key, a CSR signed in the key store, POST /v1/enroll with a one-time token,
//     sent to the CA over TLS 1.3 spoken by this page, through the gateway's relay "ca";
//  3. calls an API behind an mTLS server (an `mtls tunnel server`) through the relay "api",
//     presenting the page's own certificate;
//  4. renews: POST /v1/renew over the page's own mTLS to the CA, with a new key;
//  5. shows the key's status, and what the server said when it refused.
//
// Configuration: ./config.json (what serve.mjs serves beside this file), or another JSON file of
// this origin named by ?config=PATH; the query parameters caUrl, caRelay, apiUrl and apiRelay
// override single fields. See docs/web.md.
import { createMtlsClient, enroll, KeyStoreClient, renew } from "./mtls-web.js";

const $ = (id) => document.getElementById(id);
const KEY_LABEL = "mtls/web example app";

/** @type {{caUrl: string, caRelay: string, apiUrl: string, apiRelay: string, trustAnchors: string}} */
let config;
/** @type {KeyStoreClient} */
let keyStore;
/** The key in use: the newest key of this app that has a certificate (a KeyInfo), or undefined. */
let current;
/** One mTLS client per server; remade when the identity changes. */
let apiClient;
let caClient;

// ---------------------------------------------------------------------------------------------
// configuration

async function loadConfig() {
  const params = new URLSearchParams(location.search);
  const res = await fetch(params.get("config") ?? "./config.json", { cache: "no-store" });
  if (!res.ok) throw new Error(`could not load the configuration: HTTP ${res.status}`);
  const cfg = await res.json();
  for (const key of ["caUrl", "caRelay", "apiUrl", "apiRelay"]) {
    if (params.has(key)) cfg[key] = params.get(key);
  }
  for (const key of ["caUrl", "caRelay", "apiUrl", "apiRelay", "trustAnchors"]) {
    if (typeof cfg[key] !== "string" || !cfg[key]) throw new Error(`the configuration lacks "${key}"`);
  }
  return cfg;
}

// ---------------------------------------------------------------------------------------------
// the mTLS clients

/** The identity of the current key, asked for every new connection (so a renewal takes effect). */
const identity = () => (current ? keyStore.identity(current.keyId) : undefined);

/** A client for the CA: without an identity for enrollment, with the page's own for renewal. */
function caFetchClient(withIdentity) {
  return createMtlsClient({
    relay: config.caRelay,
    trustAnchors: config.trustAnchors,
    ...(withIdentity ? { identity } : {}),
  });
}

function api() {
  apiClient ??= createMtlsClient({ relay: config.apiRelay, trustAnchors: config.trustAnchors, identity });
  return apiClient;
}

/** New connections from now on: close the pooled ones (after enrollment, renewal, deletion). */
async function dropConnections() {
  const clients = [apiClient, caClient].filter(Boolean);
  apiClient = undefined;
  caClient = undefined;
  await Promise.all(clients.map((c) => c.close().catch(() => {})));
}

// ---------------------------------------------------------------------------------------------
// the steps

async function openKeyStore() {
  const worker = new Worker(new URL("./keystore-worker.js", import.meta.url), { type: "module" });
  keyStore = KeyStoreClient.connect(worker);
  const keys = await keyStore.list();
  current = keys.filter((k) => k.label === KEY_LABEL && k.chain?.length).at(-1);
  $("keystore-state").textContent =
    `Key store worker ready: ${keys.length} key(s) in its IndexedDB; no key can be exported from it.`;
  $("keystore-step").classList.add("done");
}

async function doEnroll() {
  const token = $("token").value.trim();
  if (!token) throw new Error("paste an enrollment token first");
  // No client certificate yet: the one-time token is the credential. The CA's API sends no CORS
  // headers, so the browser's fetch cannot reach it from this page; the page's own TLS can.
  const client = caFetchClient(false);
  try {
    // A new non-extractable key in the store, its CSR signed there, POST /v1/enroll, the chain stored.
    current = await enroll({ fetch: client.fetch, caUrl: config.caUrl, token, keyStore, label: KEY_LABEL });
    $("enroll-step").classList.add("done");
    $("token").value = "";
  } finally {
    await client.close().catch(() => {});
    await dropConnections();
  }
}

async function doCallApi() {
  $("api-result").hidden = true;
  const res = await api().fetch(config.apiUrl, { headers: { accept: "application/json" } });
  const text = await res.text();
  let shown = text;
  try {
    shown = JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    // not JSON: show it as it came
  }
  $("api-result").hidden = false;
  $("api-result").textContent = `HTTP ${res.status}\n${shown}`;
  if (res.ok) $("api-step").classList.add("done");
}

async function doRenew() {
  // POST /v1/renew over the page's own mTLS (the current certificate authenticates), with a new key:
  // renew() makes it in the store, stores the new chain beside it and deletes the old key.
  caClient ??= caFetchClient(true);
  const before = current;
  current = await renew({ fetch: caClient.fetch, caUrl: config.caUrl, keyStore, keyId: current.keyId });
  await dropConnections();
  const was = await leafSummary(before.chain[0]);
  const now = await leafSummary(current.chain[0]);
  $("renew-result").textContent =
    `Renewed with a new key: serial ${was.serial} → ${now.serial}, valid until ${current.notAfter?.toISOString()}.`;
  $("renew-step").classList.add("done");
}

async function doForget() {
  if (!current) return;
  await keyStore.delete(current.keyId);
  current = undefined;
  await dropConnections();
  for (const id of ["enroll-step", "api-step", "renew-step"]) $(id).classList.remove("done");
  $("api-result").hidden = true;
  $("renew-result").textContent = "";
}

// ---------------------------------------------------------------------------------------------
// showing the key and its certificate

/** Reads one DER TLV at `at`: its tag, where its value starts and ends. */
function tlv(der, at) {
  const tag = der[at];
  let len = der[at + 1];
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[start + i];
    start += n;
  }
  return { tag, start, end: start + len };
}

/** The serial (hex) and subject CN of a DER certificate, and its SHA-256 fingerprint. */
async function leafSummary(der) {
  const cert = tlv(der, 0);
  const tbs = tlv(der, cert.start);
  let at = tbs.start;
  if (der[at] === 0xa0) at = tlv(der, at).end; // [0] version
  const serialTlv = tlv(der, at);
  const serial = Array.from(der.subarray(serialTlv.start, serialTlv.end), (b) => b.toString(16).padStart(2, "0"))
    .join("")
    .replace(/^00(?=[89a-f])/, "");
  at = tlv(der, serialTlv.end).end; // signature algorithm
  at = tlv(der, at).end; // issuer
  at = tlv(der, at).end; // validity
  const subject = tlv(der, at);
  let cn = "";
  // CN: the OID 2.5.4.3 (06 03 55 04 03) followed by its string value.
  for (let i = subject.start; i + 5 < subject.end; i++) {
    if (der[i] === 0x06 && der[i + 1] === 3 && der[i + 2] === 0x55 && der[i + 3] === 4 && der[i + 4] === 3) {
      const value = tlv(der, i + 5);
      cn = new TextDecoder().decode(der.subarray(value.start, value.end));
    }
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", der));
  const fingerprint = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  return { serial, cn, fingerprint };
}

async function showStatus() {
  const badge = $("status-badge");
  const has = Boolean(current?.chain?.length);
  for (const id of ["call-api", "renew", "forget"]) $(id).disabled = !has;
  $("enroll").disabled = !keyStore;
  if (!has) {
    badge.className = "badge none";
    badge.textContent = "no certificate yet";
    for (const id of ["key-id", "key-info", "cert-subject", "cert-serial", "cert-fingerprint", "cert-validity"])
      $(id).textContent = "–";
    return;
  }
  const leaf = await leafSummary(current.chain[0]);
  const expired = current.notAfter && current.notAfter.getTime() < Date.now();
  badge.className = `badge ${expired || refused ? "bad" : "ok"}`;
  badge.textContent = expired ? "certificate expired" : refused ? "refused by the server" : "enrolled";
  $("key-id").textContent = current.keyId;
  $("key-info").textContent = `ECDSA P-256, non-extractable, made ${current.createdAt.toISOString()}`;
  $("cert-subject").textContent = `CN=${leaf.cn}`;
  $("cert-serial").textContent = leaf.serial;
  $("cert-fingerprint").textContent = leaf.fingerprint;
  $("cert-validity").textContent = `${current.notBefore?.toISOString()} → ${current.notAfter?.toISOString()}`;
}

/** Set when a server refused the current certificate; cleared by the next success. */
let refused;

/**
 * A server that refuses a certificate after the TLS handshake closes the connection: the page sees a
 * TLS session cut without close_notify (E_TLS), or, when the close came as a TCP reset, the relay's
 * "target connection lost" (E_RELAY, WebSocket close 1011).
 */
const droppedByServer = (err) => err.code === "E_RELAY" && err.closeCode === 1011;

/** What an error most likely means, in words for the person in front of the page. */
function hintFor(err) {
  if (err.code === "E_TLS" || err.code === "E_TLS_CERT") {
    if (err.direction === "sent") return "This page refused the server (its certificate, or a protocol error).";
    return (
      "The server ended the TLS session: it did not accept this page's certificate " +
      "(revoked, expired or not allowed). Enroll again with a new token."
    );
  }
  if (droppedByServer(err)) {
    return (
      "The server dropped the connection behind the relay: it most likely did not accept this page's " +
      "certificate (revoked, expired or not allowed). Enroll again with a new token."
    );
  }
  if (err.code === "E_RELAY") return "The gateway's relay could not be reached, or refused this page's origin.";
  if (err.code === "E_HTTP") return "The CA refused the request (its code and message are above).";
  return "";
}

function showError(err) {
  const box = $("error");
  if (!err) {
    box.hidden = true;
    return;
  }
  console.error(err);
  const code = err.code ?? err.name ?? "Error";
  const alert = err.alertName ? ` (TLS alert ${err.alertName}, ${err.direction})` : "";
  $("error-code").textContent = code;
  $("error-message").textContent = `${err.message}${alert}`;
  $("error-hint").textContent = hintFor(err);
  box.dataset.code = code;
  box.dataset.alert = err.alertName ?? "";
  box.hidden = false;
  if (code === "E_TLS" || code === "E_TLS_CERT" || droppedByServer(err)) refused = err;
}

let finished = 0;

/** Runs one step from a button: busy while it runs, the error shown if it fails. */
function step(button, fn) {
  $(button).addEventListener("click", async () => {
    $(button).disabled = true;
    document.body.dataset.busy = button;
    showError(undefined);
    try {
      await fn();
      refused = undefined;
    } catch (err) {
      showError(err);
    } finally {
      await showStatus().catch(showError);
      delete document.body.dataset.busy;
      // For tests and scripts: which step finished last, and how many have finished.
      document.body.dataset.done = `${button}:${++finished}`;
    }
  });
}

async function main() {
  try {
    config = await loadConfig();
    $("ca-url").textContent = config.caUrl;
    $("api-url").textContent = config.apiUrl;
    await openKeyStore();
  } catch (err) {
    $("keystore-state").textContent = "The key store could not be opened.";
    showError(err);
  }
  step("enroll", doEnroll);
  step("call-api", doCallApi);
  step("renew", doRenew);
  step("forget", doForget);
  await showStatus().catch(showError);
  document.body.dataset.ready = "true";
}

main();
