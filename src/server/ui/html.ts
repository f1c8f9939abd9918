/**
 * Server-rendered HTML that is safe by default: every value interpolated into `html\`...\`` is
 * escaped, unless it is itself the result of `html` (or of `raw`, for markup we wrote ourselves).
 * Certificate fields come from whoever asked for the certificate, so nothing of theirs may ever be
 * markup: a CN of `<script>` renders as the text `<script>`.
 */

/** A piece of markup known to be safe. Only `html`, `raw` and `joinHtml` make one. */
export class Html {
  private constructor(readonly text: string) {}
  /** Internal: the only way in; `raw` and `html` call it. */
  static trusted(text: string): Html {
    return new Html(text);
  }
  toString(): string {
    return this.text;
  }
}

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
  "`": "&#96;",
};

/** Text made safe for element content and for quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"'`]/g, (c) => ESCAPES[c] as string);
}

/**
 * What a value becomes: Html as is; arrays item by item; null, undefined and false as nothing (so
 * `${cond && html\`...\`}` works); anything else as escaped text.
 */
function render(value: unknown): string {
  if (value instanceof Html) return value.text;
  if (value === null || value === undefined || value === false) return "";
  if (Array.isArray(value)) return value.map(render).join("");
  return escapeHtml(String(value));
}

/** The tagged template: `html\`<td>${record.subject}</td>\`` escapes the subject. */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0] ?? "";
  for (let i = 0; i < values.length; i++) out += render(values[i]) + (strings[i + 1] ?? "");
  return Html.trusted(out);
}

/** Markup written by us (a stylesheet link, an SVG path built from numbers). Never for input. */
export const raw = (text: string): Html => Html.trusted(text);

/** Joins pieces (each escaped unless Html) with a separator. */
export function joinHtml(items: readonly unknown[], separator: unknown = ""): Html {
  return Html.trusted(items.map(render).join(render(separator)));
}

/** A query string from parameters, skipping empty ones; values percent-encoded (then escaped by `html`). */
export function queryString(params: Record<string, string | number | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params))
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const text = q.toString();
  return text ? `?${text}` : "";
}
