import type { ErrorCode } from "../errors.js";
import type { PeerIdentity } from "../policy/index.js";
import type { RefusalReason } from "../tls/index.js";
import type { TokenRefusal } from "./bound-token.js";

/**
 * What the gateway answers instead of a raw TLS alert: a page for people (Accept: text/html) that
 * says what happened and links to enrollment, and JSON with a stable code for programs.
 */

/** Why a request got no further than the gateway. */
export type GatewayRefusal =
  | RefusalReason
  | "no_route"
  | "bad_request"
  | "too_large"
  | "upstream_unreachable"
  | "upstream_timeout"
  | TokenRefusal;

export interface RefusalAnswer {
  status: number;
  code: ErrorCode;
  /** Page heading. */
  title: string;
  /** One sentence for people and programs alike (never internal details such as file paths). */
  message: string;
  /** Whether the enrollment link helps (certificate problems). */
  enroll: boolean;
  /** A `WWW-Authenticate` challenge (RFC 6750 §3), for access token refusals. */
  challenge?: string;
}

/** RFC 6750 §3: the realm of the gateway's Bearer challenges. */
const BEARER = 'Bearer realm="mtls"';

const ANSWERS: Record<GatewayRefusal, RefusalAnswer> = {
  no_certificate: {
    status: 401,
    code: "E_NOT_AUTHENTICATED",
    title: "A client certificate is needed",
    message: "This address admits only clients with a certificate, and none was presented.",
    enroll: true,
  },
  expired: {
    status: 401,
    code: "E_EXPIRED",
    title: "Your certificate has expired",
    message: "The client certificate presented is expired or not yet valid.",
    enroll: true,
  },
  revoked: {
    status: 401,
    code: "E_REVOKED",
    title: "Your certificate has been revoked",
    message: "The client certificate presented has been revoked: it can no longer be used to sign in.",
    enroll: true,
  },
  unknown_ca: {
    status: 401,
    code: "E_UNTRUSTED",
    title: "Your certificate is from an unknown authority",
    message: "The client certificate presented was not issued by a certificate authority this site trusts.",
    enroll: true,
  },
  bad_purpose: {
    status: 401,
    code: "E_PURPOSE",
    title: "This certificate cannot be used to sign in",
    message: "The certificate presented is not a client certificate.",
    enroll: true,
  },
  handshake_error: {
    status: 401,
    code: "E_NOT_AUTHENTICATED",
    title: "Your certificate could not be checked",
    message: "The client certificate presented could not be verified.",
    enroll: true,
  },
  handshake_timeout: {
    status: 401,
    code: "E_NOT_AUTHENTICATED",
    title: "Your certificate could not be checked",
    message: "The client certificate presented could not be verified.",
    enroll: true,
  },
  bad_name: {
    status: 401,
    code: "E_NOT_AUTHENTICATED",
    title: "Your certificate could not be checked",
    message: "The client certificate presented could not be verified.",
    enroll: true,
  },
  not_allowed: {
    status: 403,
    code: "E_NOT_AUTHORIZED",
    title: "Your certificate does not give access here",
    message: "The client certificate presented is valid, but it is not allowed for this route.",
    enroll: false,
  },
  no_route: {
    status: 404,
    code: "E_NOT_FOUND",
    title: "Not found",
    message: "No route of this gateway serves this address.",
    enroll: false,
  },
  bad_request: {
    status: 400,
    code: "E_BAD_INPUT",
    title: "Bad request",
    message: "The request target is not a path this gateway can route.",
    enroll: false,
  },
  too_large: {
    status: 413,
    code: "E_TOO_LARGE",
    title: "Request too large",
    message: "The request body is larger than this gateway allows.",
    enroll: false,
  },
  upstream_unreachable: {
    status: 502,
    code: "E_UNAVAILABLE",
    title: "The service is unavailable",
    message: "The service behind this gateway could not be reached.",
    enroll: false,
  },
  upstream_timeout: {
    status: 504,
    code: "E_UNAVAILABLE",
    title: "The service did not answer in time",
    message: "The service behind this gateway did not answer in time.",
    enroll: false,
  },
  // RFC 6750 §3.1: a request without a token gets a challenge with no error code.
  token_missing: {
    status: 401,
    code: "E_NO_ACCESS_TOKEN",
    title: "An access token is needed",
    message:
      "This address admits only requests with a bearer access token (Authorization: Bearer), and none was presented.",
    enroll: false,
    challenge: BEARER,
  },
  token_malformed: {
    status: 400,
    code: "E_BAD_ACCESS_TOKEN",
    title: "Bad Authorization header",
    message: "The Authorization header does not carry exactly one bearer token.",
    enroll: false,
    challenge: `${BEARER}, error="invalid_request", error_description="the Authorization header does not carry exactly one bearer token"`,
  },
  token_invalid: {
    status: 401,
    code: "E_BAD_ACCESS_TOKEN",
    title: "Your access token is not accepted",
    message: "The access token is malformed, expired, badly signed, or not issued for this service.",
    enroll: false,
    challenge: `${BEARER}, error="invalid_token", error_description="the access token is malformed, expired, badly signed or not for this service"`,
  },
  // RFC 8705 §3: a certificate-bound token presented with another certificate.
  token_binding: {
    status: 401,
    code: "E_ACCESS_TOKEN_BINDING",
    title: "This access token belongs to another certificate",
    message:
      "The access token is bound to another client certificate than the one presented on this connection.",
    enroll: false,
    challenge: `${BEARER}, error="invalid_token", error_description="the access token is bound to another client certificate"`,
  },
  jwks_unavailable: {
    status: 503,
    code: "E_UNAVAILABLE",
    title: "Access tokens cannot be checked right now",
    message: "The keys that verify access tokens could not be fetched; try again later.",
    enroll: false,
  },
};

export function refusalAnswer(reason: GatewayRefusal): RefusalAnswer {
  return ANSWERS[reason];
}

/** Whether the client prefers HTML (a browser) to JSON: text/html listed with a q at least that of JSON. */
export function wantsHtml(accept: string | undefined): boolean {
  if (!accept) return false;
  let html = 0;
  let json = 0;
  for (const part of accept.toLowerCase().split(",")) {
    const [type = "", ...params] = part.split(";").map((s) => s.trim());
    const qParam = params.find((p) => p.startsWith("q="));
    const q = qParam ? Number(qParam.slice(2)) : 1;
    if (!Number.isFinite(q)) continue;
    if (type === "text/html" || type === "application/xhtml+xml") html = Math.max(html, q);
    else if (type === "application/json" || type.endsWith("+json")) json = Math.max(json, q);
  }
  return html > 0 && html >= json;
}

const HTML_ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c] as string);
}

export interface PageContext {
  /** Where people get a certificate (--enroll-url). */
  enrollUrl?: string;
  /** The certificate presented, when there was one: its subject and serial are shown to its owner. */
  identity?: PeerIdentity;
  method?: string;
  path?: string;
}

/** "2026-12-27 05:32 UTC": a date people read, the same whatever the server's locale. */
function readableDate(d: Date): string {
  return `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

/** The next step a person can take, by what happened. */
function nextSteps(answer: RefusalAnswer, ctx: PageContext): string {
  if (answer.enroll && ctx.enrollUrl) {
    return `<ol>
<li><a class="button" href="${escapeHtml(ctx.enrollUrl)}">Get a certificate</a></li>
<li>Install it in your browser (or your system's certificate store) when asked.</li>
<li>Restart the browser (or close all its windows) and open this page again.</li>
</ol>`;
  }
  if (answer.enroll) {
    return "<p>Ask your administrator for a client certificate, install it in your browser, restart the browser and open this page again.</p>";
  }
  if (answer.status === 403) {
    return "<p>If you should have access, ask the administrator of this service to allow your certificate, and give them the details above.</p>";
  }
  if (answer.status >= 500)
    return "<p>This is not a problem with your certificate. Try again in a moment.</p>";
  return "<p>Check the address, or go back to the page you came from.</p>";
}

/** The page for a person: what happened, which certificate, and what to do next. */
export function refusalHtml(answer: RefusalAnswer, ctx: PageContext = {}): string {
  const who = ctx.identity
    ? `<h2>The certificate your browser presented</h2>
<dl>
<dt>Subject</dt><dd><code>${escapeHtml(ctx.identity.subject)}</code></dd>
<dt>Serial</dt><dd><code>${escapeHtml(ctx.identity.serial)}</code></dd>
<dt>Valid until</dt><dd>${escapeHtml(readableDate(ctx.identity.notAfter))}</dd>
</dl>`
    : "";
  const where = ctx.path ? `Request <code>${escapeHtml(`${ctx.method ?? "GET"} ${ctx.path}`)}</code> · ` : "";
  const tone = answer.status >= 500 ? "unavailable" : "refused";
  const kind =
    answer.status >= 500
      ? "Service unavailable"
      : answer.status === 401 || answer.status === 403
        ? "Access refused"
        : "Request refused";
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>${escapeHtml(answer.title)}</title>
<style>
*{box-sizing:border-box}
body{margin:0;padding:3rem 1rem;background:#f3f4f6;color:#1f2328;font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:38rem;margin:0 auto;background:#fff;border:1px solid #d0d7de;border-top:6px solid #c62828;border-radius:.5rem;padding:2rem 2.25rem}
main.unavailable{border-top-color:#b26a00}
.kind{margin:0;color:#8a1c1c;font-size:.8rem;font-weight:700;letter-spacing:.06em;text-transform:uppercase}
main.unavailable .kind{color:#7a4a00}
h1{margin:.3rem 0 .6rem;font-size:1.6rem;line-height:1.25}
h2{margin:1.6rem 0 .5rem;font-size:1rem}
p{margin:.5rem 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:0;padding:.8rem 1rem;background:#f6f8fa;border-radius:.4rem}
dt{color:#57606a}dd{margin:0;overflow-wrap:anywhere}
code{font:.9em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
ol{margin:.5rem 0;padding-left:1.4rem}li{margin:.45rem 0}
.button{display:inline-block;padding:.55rem 1.1rem;background:#0a58ca;color:#fff;border-radius:.35rem;font-weight:600;text-decoration:none}
.button:hover{background:#084298}.button:focus-visible{outline:3px solid #86b7fe;outline-offset:2px}
.meta{margin-top:1.8rem;padding-top:.8rem;border-top:1px solid #d8dee4;color:#57606a;font-size:.85rem}
@media (prefers-color-scheme:dark){body{background:#0d1117;color:#e6edf3}main{background:#161b22;border-color:#30363d}
dl{background:#0d1117}dt,.meta{color:#9da7b3}.kind{color:#ff9492}main.unavailable .kind{color:#e3b341}.meta{border-color:#30363d}}
</style>
</head>
<body>
<main class="${tone}">
<p class="kind">${kind}</p>
<h1>${escapeHtml(answer.title)}</h1>
<p>${escapeHtml(answer.message)}</p>
${who}
<h2>What to do next</h2>
${nextSteps(answer, ctx)}
<p class="meta">${where}${answer.status} · ${escapeHtml(answer.code)}</p>
</main>
</body>
</html>
`;
}

/** The JSON for a program: `{"error":{"code":"E_…","message":"…"}}`. */
export function refusalJson(answer: RefusalAnswer): string {
  return JSON.stringify({ error: { code: answer.code, message: answer.message } });
}

/** Body and headers of a refusal, negotiated on the Accept header. */
export function renderRefusal(
  answer: RefusalAnswer,
  accept: string | undefined,
  ctx: PageContext = {},
): { body: string; headers: Record<string, string> } {
  const html = wantsHtml(accept);
  const body = html ? refusalHtml(answer, ctx) : refusalJson(answer);
  return {
    body,
    headers: {
      "content-type": html ? "text/html; charset=utf-8" : "application/json",
      "content-length": String(Buffer.byteLength(body)),
      "cache-control": "no-store",
      "x-content-type-options": "nosniff",
      ...(html ? { "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'" } : {}),
      ...(answer.challenge ? { "www-authenticate": answer.challenge } : {}),
      vary: "Accept",
    },
  };
}
