import { MtlsError } from "../errors.js";

const UNIT_MS: Record<string, number> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
  y: 365 * 86_400_000,
};

/** "30d", "12h", "1h30m", "90s", "1y" → milliseconds. Plain numbers are refused: the unit must be said. */
export function parseDuration(text: string, what = "duration"): number {
  const parts = [...text.matchAll(/(\d+)([smhdwy])/g)];
  if (!text || parts.map((p) => p[0]).join("") !== text) {
    throw new MtlsError("E_USAGE", `invalid ${what} "${text}" (examples: 30d, 12h, 1h30m, 1y)`);
  }
  const ms = parts.reduce((sum, p) => sum + Number(p[1]) * (UNIT_MS[p[2] as string] as number), 0);
  if (ms <= 0) throw new MtlsError("E_USAGE", `invalid ${what} "${text}": must be positive`);
  return ms;
}

export function formatDuration(ms: number): string {
  const d = Math.floor(ms / 86_400_000);
  const h = Math.floor((ms % 86_400_000) / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  if (d > 0) return h > 0 ? `${d}d${h}h` : `${d}d`;
  if (h > 0) return m > 0 ? `${h}h${m}m` : `${h}h`;
  return `${Math.max(m, 0)}m`;
}
