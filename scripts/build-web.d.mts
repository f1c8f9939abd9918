// Types of scripts/build-web.mjs, for the tests that drive it (src/web/bundle.test.ts).
export interface WebEntry {
  in: string;
  out: string;
}
export interface WebOutput {
  file: string;
  bytes: number;
  gzipBytes: number;
}
export const WEB_ENTRIES: WebEntry[];
export const NODE_GLOBALS: string[];
export const ALLOWED: [prefix: string, global: string, why: string][];
export class WebBuildError extends Error {
  problems: string[];
}
export function buildWeb(options?: {
  outdir?: string;
  entries?: WebEntry[];
  minify?: boolean;
}): Promise<{ outputs: WebOutput[] }>;
export function nodeGlobalUses(text: string): { global: string; member: boolean; module: string }[];
export function scanShipped(text: string, name: string, allowed?: Record<string, number>): string[];
