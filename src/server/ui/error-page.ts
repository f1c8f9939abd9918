import type { FastifyReply, FastifyRequest } from "fastify";
import type { ErrorCode } from "../../errors.js";
import { MtlsError } from "../../errors.js";
import { toHttpError } from "../errors.js";
import { type Html, html } from "./html.js";
import { banner, page } from "./layout.js";
import { pageHeaders } from "./security.js";

/** An answer that is a whole page of its own: its status, heading and what to do next. */
export class PageError extends MtlsError {
  constructor(
    code: ErrorCode,
    readonly status: number,
    readonly title: string,
    readonly body: Html,
  ) {
    super(code, title);
  }
}

const TITLES: Record<number, string> = {
  400: "That did not work",
  401: "A client certificate is needed",
  403: "Not allowed",
  404: "Not found",
  410: "This link can no longer be used",
  413: "Too large",
  429: "Too many requests",
};

/** Sends an HTML page with the headers every page carries. */
export function sendPage(reply: FastifyReply, status: number, doc: Html): FastifyReply {
  return pageHeaders(reply).code(status).type("text/html; charset=utf-8").send(doc.text);
}

/**
 * The UI's error handler: the same status and one-line message as the JSON API (errors.ts keeps
 * internal details out of both), as a page a person can act on.
 */
export function sendErrorPage(
  req: FastifyRequest,
  reply: FastifyReply,
  err: unknown,
  log: (e: unknown) => void,
) {
  if (err instanceof PageError)
    return sendPage(reply, err.status, page({ title: err.title, narrow: true, body: err.body }));
  const h = toHttpError(err);
  if (h.status >= 500) log(err);
  if (h.retryAfter !== undefined) reply.header("retry-after", String(h.retryAfter));
  const title = TITLES[h.status] ?? "Something went wrong";
  const back =
    req.method === "POST" ? html`<p><a href="${req.url.split("?")[0] ?? "/"}">Back to the form</a></p>` : "";
  return sendPage(
    reply,
    h.status,
    page({
      title,
      narrow: true,
      body: html`<h1>${title}</h1>${banner(h.status >= 500 ? "bad" : "warn", h.message)}${back}<p class="muted">Error code: <code>${h.code}</code></p>`,
    }),
  );
}
