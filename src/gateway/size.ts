import { MtlsError } from "../errors.js";

/** "100m", "1g", "512k", "1048576", "0" (or a number of bytes) → bytes. */
export function parseSize(value: string | number, what: string): number {
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return value;
  const m = /^(\d+)([kmg]?)b?$/i.exec(String(value).trim());
  if (!m)
    throw new MtlsError("E_USAGE", `invalid ${what} "${value}" (examples: 512k, 100m, 1g, 0 for no limit)`);
  const unit = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[(m[2] as string).toLowerCase()] as number;
  return Number(m[1]) * unit;
}
