import type { IncomingMessage, ServerResponse } from "node:http";
import { MtlsError } from "../errors.js";
import { BODY_LIMIT } from "./app.js";
import type { ServerContext } from "./context.js";
import { errorBody, RateLimitedError, toHttpError } from "./errors.js";
import { decodeOcspGet, ocspAnswer } from "./routes-revocation.js";

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * The public listener's OCSP requests answered on node:http directly, everything else handed to
 * Fastify. OCSP is the one endpoint revocation clients hit at high rates; Fastify's routing, hooks
 * and reply object cost about as much per request as the pre-signed answer itself (bench/ca.ts).
 * Same behaviour as the Fastify route: the rate limit before the body is read, the 64 KiB body
 * limit, JSON errors, the request metrics; successful answers are not logged (as with Fastify,
 * where they go to debug), failures of the responder are.
 */
export function withOcspFastPath(ctx: ServerContext, fallback: Handler): Handler {
  return (req, res) => {
    const url = req.url ?? "";
    const post = req.method === "POST" && (url === "/ocsp" || url === "/ocsp/");
    const get = req.method === "GET" && url.startsWith("/ocsp/") && url.length > 6;
    if (!post && !get) {
      fallback(req, res);
      return;
    }
    const started = process.hrtime.bigint();
    const route = post ? "/ocsp" : "/ocsp/*";
    const finish = (status: number, headers: Record<string, string>, body: Buffer | string) => {
      res.writeHead(status, { ...headers, "content-length": String(Buffer.byteLength(body)) });
      res.end(body);
      ctx.metrics?.requests.inc({ listener: "public", route, status: String(status) });
      ctx.metrics?.duration.observe(
        { listener: "public", route },
        Number(process.hrtime.bigint() - started) / 1e9,
      );
    };
    const fail = (err: unknown) => {
      const h = toHttpError(err);
      const headers: Record<string, string> = { "content-type": "application/json; charset=utf-8" };
      if (h.retryAfter !== undefined) headers["retry-after"] = String(h.retryAfter);
      if (h.status === 413) headers.connection = "close";
      finish(h.status, headers, JSON.stringify(errorBody(h)));
    };
    const answer = (der: Uint8Array | undefined) => {
      ocspAnswer(ctx, der, "ocsp-fast").then(
        (a) => finish(200, a.headers, a.body),
        (err) => fail(err),
      );
    };

    const limit = ctx.limiter.take("ocsp", req.socket.remoteAddress ?? "unknown");
    if (!limit.ok) {
      ctx.metrics?.rateLimited.inc({ bucket: "ocsp" });
      req.resume();
      fail(new RateLimitedError(limit.retryAfter));
      return;
    }
    if (get) {
      answer(decodeOcspGet(url.slice("/ocsp/".length)));
      return;
    }
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > BODY_LIMIT) {
      req.resume();
      fail(new MtlsError("E_TOO_LARGE", `the request body is larger than ${BODY_LIMIT} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on("data", (chunk: Buffer) => {
      if (over) return;
      size += chunk.length;
      if (size > BODY_LIMIT) {
        over = true;
        fail(new MtlsError("E_TOO_LARGE", `the request body is larger than ${BODY_LIMIT} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!over) answer(new Uint8Array(Buffer.concat(chunks, size)));
    });
    req.on("error", () => res.destroy());
  };
}
