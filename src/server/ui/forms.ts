import type { FastifyRequest } from "fastify";
import { MtlsError } from "../../errors.js";

/** The fields of a posted form; the first value of each name counts. */
export type FormFields = Record<string, string>;

/**
 * Reads an `application/x-www-form-urlencoded` body. The app hands every non-JSON body over as a
 * Buffer (app.ts), so forms are parsed here and nothing else is accepted.
 */
export function formBody(req: FastifyRequest): FormFields {
  const type = String(req.headers["content-type"] ?? "")
    .split(";")[0]
    ?.trim()
    .toLowerCase();
  if (type !== "application/x-www-form-urlencoded")
    throw new MtlsError("E_BAD_INPUT", "send this form as application/x-www-form-urlencoded");
  const body = req.body;
  const text = Buffer.isBuffer(body) ? body.toString("utf8") : typeof body === "string" ? body : "";
  // No prototype: a field named "__proto__" is just a field.
  const out: FormFields = Object.create(null);
  for (const [k, v] of new URLSearchParams(text)) if (!(k in out)) out[k] = v;
  return out;
}

/** A trimmed text field, "" when absent. */
export const field = (form: FormFields, name: string): string => (form[name] ?? "").trim();
