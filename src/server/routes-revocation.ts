import { createHash } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { isMtlsError } from "../errors.js";
import { rateLimit } from "./app.js";
import type { ServerContext } from "./context.js";

/**
 * RFC 6960 OCSPResponse with only a status (no responseBytes), for answers that cannot be signed:
 * SEQUENCE { ENUMERATED status }. 1 malformedRequest, 2 internalError, 3 tryLater.
 */
const bareOcspResponse = (status: 1 | 2 | 3) => new Uint8Array([0x30, 0x03, 0x0a, 0x01, status]);
export const OCSP_MALFORMED = bareOcspResponse(1);
export const OCSP_INTERNAL_ERROR = bareOcspResponse(2);
export const OCSP_TRY_LATER = bareOcspResponse(3);

const etagOf = (der: Uint8Array) => `"${createHash("sha1").update(der).digest("hex")}"`;

/** Sends DER with an ETag, answering 304 to a matching If-None-Match. */
function sendDer(req: FastifyRequest, reply: FastifyReply, der: Uint8Array, type: string) {
  const etag = etagOf(der);
  reply.header("etag", etag).type(type);
  if (req.headers["if-none-match"] === etag) return reply.code(304).send();
  return reply.send(Buffer.from(der.buffer, der.byteOffset, der.byteLength));
}

/**
 * The endpoints revocation clients and anyone else may call, on both listeners: /healthz, /crl,
 * /crl/root, /ocsp (GET with the base64 request in the path, or POST), and the CA certificates at
 * the caIssuers URLs the AIA extension of issued certificates points to (/ca/*.crt, DER).
 */
export function registerRevocationRoutes(app: FastifyInstance, ctx: ServerContext): void {
  // Limits are taken before the body is read.
  const limited = (bucket: string) => ({
    onRequest: async (req: FastifyRequest) => rateLimit(req, ctx, bucket),
  });
  app.get("/healthz", async (_req, reply) => {
    // A CA whose database does not answer is not healthy.
    await ctx.ca.store.getSetting("ca.name");
    return reply.type("application/json; charset=utf-8").send({ ok: true });
  });

  const crl = (which: "intermediate" | "root") => async (req: FastifyRequest, reply: FastifyReply) => {
    const crls = await ctx.services.crls();
    // Revocations must bite within seconds: caches may keep the CRL but must revalidate it.
    reply.header("cache-control", "public, no-cache");
    if (crls.thisUpdate && which === "intermediate")
      reply.header("last-modified", crls.thisUpdate.toUTCString());
    return sendDer(req, reply, crls[which], "application/pkix-crl");
  };
  app.get("/crl", limited("crl"), crl("intermediate"));
  app.get("/crl/root", limited("crl"), crl("root"));

  const caCert = (which: "root" | "intermediate") => async (req: FastifyRequest, reply: FastifyReply) => {
    reply.header("cache-control", "public, max-age=86400");
    return sendDer(req, reply, ctx.ca[which].der, "application/pkix-cert");
  };
  app.get("/ca/root.crt", caCert("root"));
  app.get("/ca/intermediate.crt", caCert("intermediate"));

  const ocsp = async (req: FastifyRequest, reply: FastifyReply, der: Uint8Array | undefined) => {
    const answer = await ocspAnswer(ctx, der, req.id);
    return reply.headers(answer.headers).send(answer.body);
  };

  app.post("/ocsp", limited("ocsp"), async (req, reply) => {
    const body = req.body;
    return ocsp(req, reply, Buffer.isBuffer(body) ? new Uint8Array(body) : undefined);
  });
  app.get("/ocsp/*", limited("ocsp"), async (req, reply) => {
    const raw = (req.params as Record<string, string | undefined>)["*"] ?? "";
    return ocsp(req, reply, decodeOcspGet(raw));
  });
}

/** An OCSP answer over HTTP: always 200 with an OCSPResponse (errors are OCSP statuses, RFC 6960). */
export interface OcspHttpAnswer {
  headers: Record<string, string>;
  body: Buffer;
}

/**
 * The answer to one OCSP request, for the Fastify route and the public listener's fast path alike:
 * the responder's DER, with RFC 5019 caching headers when it was pre-signed (no nonce). Never
 * throws: a malformed request gets malformedRequest, a failing responder internalError (logged).
 */
export async function ocspAnswer(
  ctx: ServerContext,
  der: Uint8Array | undefined,
  reqId: string,
): Promise<OcspHttpAnswer> {
  const headers: Record<string, string> = { "content-type": "application/ocsp-response" };
  const bare = (status: "malformedRequest" | "internalError", body: Uint8Array) => {
    ctx.metrics?.ocsp.inc({ status });
    return { headers, body: Buffer.from(body) };
  };
  if (!der || der.length === 0) return bare("malformedRequest", OCSP_MALFORMED);
  let answer: Awaited<ReturnType<typeof ctx.services.ocsp>>;
  try {
    answer = await ctx.services.ocsp(der);
  } catch (err) {
    if (isMtlsError(err, "E_BAD_INPUT")) return bare("malformedRequest", OCSP_MALFORMED);
    ctx.logger.error({ reqId, err: (err as Error)?.message ?? String(err) }, "OCSP responder failed");
    return bare("internalError", OCSP_INTERNAL_ERROR);
  }
  ctx.metrics?.ocsp.inc({ status: answer.status });
  if (answer.thisUpdate) headers["last-modified"] = answer.thisUpdate.toUTCString();
  if (!answer.nonce && answer.nextUpdate && answer.thisUpdate) {
    // RFC 5019 §6: cacheable until nextUpdate, revalidated after.
    const now = ctx.clock();
    const maxAge = Math.max(0, Math.floor((answer.nextUpdate.getTime() - now.getTime()) / 1000));
    headers["cache-control"] = `max-age=${maxAge}, public, no-transform, must-revalidate`;
    headers.expires = answer.nextUpdate.toUTCString();
    headers.etag = etagOf(answer.der);
  }
  return { headers, body: Buffer.from(answer.der.buffer, answer.der.byteOffset, answer.der.byteLength) };
}

/** The DER request of `GET /ocsp/{url-encoded base64}` (RFC 6960 appendix A.1), or undefined. */
export function decodeOcspGet(text: string): Uint8Array | undefined {
  let b64 = text;
  if (b64.includes("%")) {
    try {
      b64 = decodeURIComponent(b64);
    } catch {
      return undefined;
    }
  }
  if (!/^[A-Za-z0-9+/=_-]+$/.test(b64)) return undefined;
  const der = Buffer.from(b64.replace(/-/g, "+").replace(/_/g, "/"), "base64");
  return der.length ? new Uint8Array(der) : undefined;
}
