import { randomBytes } from "node:crypto";
import {
  closeSync,
  fsyncSync,
  linkSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { MtlsError } from "../errors.js";

/**
 * Files mtls writes are never half-written: the bytes go to a temporary file in the same folder
 * (created with the final mode, so a key is never world-readable even for a moment), are fsynced,
 * and are renamed over the target. The rename is the commit point.
 */
export interface WriteOptions {
  mode?: number;
  /** Replace an existing file; without it an existing target is an E_EXISTS error. */
  overwrite?: boolean;
}

export function tempPathFor(target: string): string {
  return join(dirname(target), `.${basename(target)}.${randomBytes(6).toString("hex")}.tmp`);
}

/** Writes `data` to a temp file beside `target` and returns the temp path (call commitFile to publish it). */
export function stageFile(target: string, data: string | Uint8Array, mode = 0o644): string {
  const tmp = tempPathFor(target);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, "wx", mode);
    const buf = typeof data === "string" ? Buffer.from(data) : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    return tmp;
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw ioError(`cannot write ${target}`, err);
  }
}

/**
 * Publishes a staged file. Without `overwrite` it refuses to replace an existing target, atomically
 * (hard link + unlink, so two processes cannot both win).
 */
export function commitFile(tmp: string, target: string, overwrite = false): void {
  try {
    if (overwrite) {
      renameSync(tmp, target);
    } else {
      linkSync(tmp, target);
      rmSync(tmp, { force: true });
    }
  } catch (err) {
    rmSync(tmp, { force: true });
    if ((err as NodeJS.ErrnoException).code === "EEXIST") {
      throw new MtlsError("E_EXISTS", `${target} already exists (use --force to replace it)`);
    }
    throw ioError(`cannot write ${target}`, err);
  }
  fsyncDir(dirname(target));
}

export function writeFileAtomic(target: string, data: string | Uint8Array, opts: WriteOptions = {}): void {
  commitFile(stageFile(target, data, opts.mode ?? 0o644), target, opts.overwrite ?? false);
}

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Some filesystems refuse fsync on directories; the rename itself is still atomic.
  }
}

export function readFileOrThrow(path: string, what = "file"): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new MtlsError("E_NOT_FOUND", `${what} not found: ${path}`);
    if (code === "EISDIR") throw new MtlsError("E_BAD_INPUT", `${path} is a directory, not a ${what}`);
    throw ioError(`cannot read ${path}`, err);
  }
}

export function ioError(message: string, cause: unknown): MtlsError {
  const detail = (cause as NodeJS.ErrnoException)?.code ?? (cause as Error)?.message ?? String(cause);
  return new MtlsError("E_IO", `${message}: ${detail}`, { cause });
}
