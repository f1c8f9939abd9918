import { MtlsError } from "../errors.js";

/** A database failure as MtlsError E_STORE, keeping the driver's error as `cause`. */
export function storeError(what: string, err: unknown): MtlsError {
  const detail = err instanceof Error ? err.message : String(err);
  return new MtlsError("E_STORE", `${what}: ${detail}`, { cause: err });
}

/** Runs one database operation; MtlsErrors pass through, anything else becomes E_STORE. */
export async function guard<T>(what: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    if (err instanceof MtlsError) throw err;
    throw storeError(what, err);
  }
}
