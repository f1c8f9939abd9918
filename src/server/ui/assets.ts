import { createHash } from "node:crypto";
import type { FastifyInstance } from "fastify";
import { APP_JS } from "./script.js";
import { APP_CSS } from "./styles.js";

/**
 * The static files of the UI. Pages link them with a content hash in the query (`/ui/app.css?v=…`),
 * so they can be cached for a year: a new build changes the hash and with it the URL.
 */
interface Asset {
  body: Buffer;
  type: string;
  hash: string;
}

function asset(text: string, type: string): Asset {
  const body = Buffer.from(text, "utf8");
  return { body, type, hash: createHash("sha256").update(body).digest("hex").slice(0, 16) };
}

const ASSETS: Record<"app.css" | "app.js", Asset> = {
  "app.css": asset(APP_CSS, "text/css; charset=utf-8"),
  "app.js": asset(APP_JS, "text/javascript; charset=utf-8"),
};

/** The URL a page uses for an asset, with its content hash. */
export const assetUrl = (name: keyof typeof ASSETS): string => `/ui/${name}?v=${ASSETS[name].hash}`;

export function registerAssets(app: FastifyInstance): void {
  for (const [name, a] of Object.entries(ASSETS)) {
    app.get(`/ui/${name}`, async (req, reply) => {
      const etag = `"${a.hash}"`;
      reply
        .header("cache-control", "public, max-age=31536000, immutable")
        .header("etag", etag)
        .header("x-content-type-options", "nosniff");
      if (req.headers["if-none-match"] === etag) return reply.code(304).send();
      return reply.type(a.type).send(a.body);
    });
  }
}
