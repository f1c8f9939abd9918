import type { IncomingMessage, Server, ServerResponse } from "node:http";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import { authenticate, type Caller } from "./auth.js";
import type { ServerContext } from "./context.js";
import { errorBody, RateLimitedError, toHttpError } from "./errors.js";
import { registerFeedRoutes } from "./routes-feed.js";
import { OCSP_MALFORMED, registerRevocationRoutes } from "./routes-revocation.js";
import { registerV1Routes } from "./routes-v1.js";
import { redactPath } from "./ui/redact.js";
import { registerUiRoutes } from "./ui/routes.js";

/** The largest request body accepted (413 E_TOO_LARGE beyond). */
export const BODY_LIMIT = 64 * 1024;

let requestCounter = 0;

/** `api`: the HTTPS listener with every endpoint; `public`: plain HTTP with /crl, /ocsp, /healthz. */
export type Listener = "api" | "public";

declare module "fastify" {
  interface FastifyRequest {
    /** Set once the request was authenticated (see callerOf). */
    mtlsCaller: Caller | null;
    /** The audit actor for the request log, once known. */
    mtlsActor: string | null;
  }
}

export interface BuildAppOptions {
  listener: Listener;
  /** Creates the Node server (https.createServer for the API); default: Fastify's plain HTTP server. */
  serverFactory?: (handler: (req: IncomingMessage, res: ServerResponse) => void) => Server;
}

/** The request's caller, authenticated once per request from its TLS connection and the inventory. */
export async function callerOf(req: FastifyRequest, ctx: ServerContext): Promise<Caller> {
  if (!req.mtlsCaller) {
    req.mtlsCaller = await authenticate(req.raw, {
      ca: ctx.ca,
      isAdmin: (rec) => ctx.services.isAdmin(rec),
      clock: ctx.clock,
    });
    req.mtlsActor ??= req.mtlsCaller.actor;
  }
  return req.mtlsCaller;
}

/** Takes a token from the client's bucket `name`, or throws E_RATE_LIMITED (429, Retry-After). */
export function rateLimit(req: FastifyRequest, ctx: ServerContext, name: string): void {
  const d = ctx.limiter.take(name, req.ip);
  if (d.ok) return;
  ctx.metrics?.rateLimited.inc({ bucket: name });
  throw new RateLimitedError(d.retryAfter);
}

/** Sends an error answer in the one JSON shape; 5xx details go to the log only. */
export function sendError(req: FastifyRequest, reply: FastifyReply, err: unknown, ctx: ServerContext) {
  const h = toHttpError(err);
  if (h.status >= 500) {
    ctx.logger.error(
      { reqId: req.id, method: req.method, path: pathOf(req), err: describe(err) },
      "request failed",
    );
  }
  if (h.retryAfter !== undefined) reply.header("retry-after", String(h.retryAfter));
  return reply.code(h.status).type("application/json; charset=utf-8").send(errorBody(h));
}

function describe(err: unknown): Record<string, unknown> {
  const e = err as { message?: unknown; code?: unknown; stack?: unknown; cause?: unknown };
  return {
    message: String(e?.message ?? err),
    code: e?.code,
    stack: e?.stack,
    cause: e?.cause ? String((e.cause as Error).message ?? e.cause) : undefined,
  };
}

/** The path without the query string, bounded for the log. */
export function pathOf(req: FastifyRequest): string {
  // Enrollment links carry their secret in the path: it never reaches the log (ui/redact.ts).
  const path = redactPath(req.url.split("?")[0] ?? "");
  return path.length > 200 ? `${path.slice(0, 197)}...` : path;
}

/**
 * One Fastify app per listener. Both share the same context (CA, services, limiter, logger) and
 * answer errors in one JSON shape; the API listener also carries the /v1 routes.
 */
export function buildApp(ctx: ServerContext, opts: BuildAppOptions): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: BODY_LIMIT,
    // OCSP GET requests carry a base64 DER request in the path.
    routerOptions: { maxParamLength: 4096 },
    genReqId: () => `${opts.listener}-${(++requestCounter).toString(36)}`,
    return503OnClosing: true,
    forceCloseConnections: "idle",
    requestTimeout: 30_000,
    keepAliveTimeout: 10_000,
    ...(opts.serverFactory ? { serverFactory: opts.serverFactory } : {}),
    // A path that is not valid percent-encoding never reaches a route: answer it here, in our shape
    // (an OCSP client gets an OCSP malformedRequest).
    frameworkErrors: (err, req, rawReply) => {
      const reply = rawReply as unknown as FastifyReply;
      if (req.url.startsWith("/ocsp/"))
        return reply.code(200).type("application/ocsp-response").send(Buffer.from(OCSP_MALFORMED));
      return sendError(req, reply, Object.assign(err, { statusCode: 400 }), ctx);
    },
  }) as unknown as FastifyInstance;

  app.decorateRequest("mtlsCaller", null);
  app.decorateRequest("mtlsActor", null);

  // JSON bodies: an empty body is {} (POST /v1/renew without data), anything else must parse.
  // Every other content type arrives as a Buffer, which the JSON endpoints refuse with a clear
  // message and POST /ocsp reads as the DER request.
  const json = app.getDefaultJsonParser("error", "error");
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (req, body, done) => {
    const text = typeof body === "string" ? body : body.toString("utf8");
    if (text.trim() === "") return done(null, {});
    return json(req, text, done);
  });
  app.removeContentTypeParser("text/plain");
  app.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err, req, reply) => sendError(req, reply, err, ctx));
  app.setNotFoundHandler((req, reply) =>
    reply
      .code(404)
      .type("application/json; charset=utf-8")
      .send(
        errorBody({
          status: 404,
          code: "E_NOT_FOUND",
          message: `no such endpoint: ${req.method} ${pathOf(req)}`,
        }),
      ),
  );

  // One JSON log line per request, and the request metrics. Successful OCSP and CRL fetches are
  // anonymous reads of signed public data at high rates: they go to debug (the metrics count them),
  // which is a third of /ocsp's cost per answer (bench/ca.ts). Their errors are logged as any other.
  app.addHook("onResponse", async (req, reply) => {
    const route = req.routeOptions.url ?? "(none)";
    const ms = Math.round(reply.elapsedTime * 100) / 100;
    const publicRead = route.startsWith("/ocsp") || route.startsWith("/crl");
    const level = publicRead && reply.statusCode < 400 ? "debug" : "info";
    ctx.logger[level](
      {
        reqId: req.id,
        listener: opts.listener,
        ip: req.ip,
        method: req.method,
        path: pathOf(req),
        status: reply.statusCode,
        actor: req.mtlsActor ?? "anonymous",
        ms,
      },
      "request",
    );
    ctx.metrics?.requests.inc({ listener: opts.listener, route, status: String(reply.statusCode) });
    ctx.metrics?.duration.observe({ listener: opts.listener, route }, reply.elapsedTime / 1000);
  });

  registerRevocationRoutes(app, ctx);
  if (opts.listener === "api") {
    registerV1Routes(app, ctx);
    // GET /v1/revocations/stream, when the server has a revocation feed (serve.ts).
    registerFeedRoutes(app, ctx);
    // The admin console, the enrollment portal and /check: browsers on the mTLS listener only.
    registerUiRoutes(app, ctx);
  }
  return app;
}
