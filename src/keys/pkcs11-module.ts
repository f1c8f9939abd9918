import { timingSafeEqual } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type * as P11 from "pkcs11js";
import { MtlsError } from "../errors.js";
import type { Pkcs11Uri } from "./pkcs11-uri.js";

/**
 * PKCS#11 modules and sessions: one C_Initialize per module and one logged-in session per token for
 * the whole process, reopened (and logged in again) once when the token was reset or removed and
 * is back. pkcs11js is loaded on first use only, so nothing that never touches a token pays for it.
 */

export type Pkcs11js = typeof P11;
let binding: Pkcs11js | undefined;

/** The pkcs11js binding, loaded on first call. */
export function pkcs11js(): Pkcs11js {
  binding ??= createRequire(import.meta.url)("pkcs11js") as Pkcs11js;
  return binding;
}

/** The PKCS#11 return value name (CKR_...) of an error from pkcs11js, if it is one. */
export function ckrOf(err: unknown): string | undefined {
  const message = (err as Error)?.message;
  return typeof message === "string" && /^CKR_[A-Z_]+$/.test(message) ? message : undefined;
}

/** CKR values after which the session is gone but the token may be back: reopen once, then retry. */
const RESET = new Set([
  "CKR_SESSION_HANDLE_INVALID",
  "CKR_SESSION_CLOSED",
  "CKR_DEVICE_REMOVED",
  "CKR_TOKEN_NOT_PRESENT",
  "CKR_USER_NOT_LOGGED_IN",
  "CKR_OBJECT_HANDLE_INVALID",
  "CKR_KEY_HANDLE_INVALID",
  "CKR_CRYPTOKI_NOT_INITIALIZED",
]);

export function isResetError(err: unknown): boolean {
  return RESET.has(ckrOf(err) ?? "");
}

/** A pkcs11js failure as an MtlsError with a code a person can act on. */
export function pkcs11Failure(err: unknown, what: string, token?: string): MtlsError {
  if (err instanceof MtlsError) return err;
  const ckr = ckrOf(err) ?? (err as Error)?.message ?? String(err);
  const on = token ? ` on token "${token}"` : "";
  switch (ckr) {
    case "CKR_PIN_INCORRECT":
    case "CKR_PIN_LEN_RANGE":
    case "CKR_PIN_INVALID":
      return new MtlsError("E_PKCS11_PIN", `wrong PIN${on} (${ckr})`, { cause: err });
    case "CKR_PIN_LOCKED":
      return new MtlsError(
        "E_PKCS11_LOCKED",
        `the user PIN${on} is locked after too many wrong PINs: the security officer must unlock it`,
        { cause: err },
      );
    case "CKR_KEY_TYPE_INCONSISTENT":
    case "CKR_KEY_FUNCTION_NOT_PERMITTED":
    case "CKR_MECHANISM_INVALID":
      return new MtlsError("E_PKCS11_KEY", `${what} failed${on}: the key cannot do this (${ckr})`, {
        cause: err,
      });
    default:
      return new MtlsError("E_PKCS11_TOKEN", `${what} failed${on}: ${ckr}`, { cause: err });
  }
}

export interface SlotEntry {
  slot: P11.Handle;
  slotId: number;
  slotInfo: P11.SlotInfo;
  token?: P11.TokenInfo;
}

/** The slot's number as RFC 7512's slot-id shows it. */
function slotNumber(slot: P11.Handle): number {
  return slot.length >= 8 ? Number(slot.readBigUInt64LE(0)) : slot.readUInt32LE(0);
}

/** Missing from pkcs11js's typings (PKCS#11 2.40 section 3.2). */
const CKF_TOKEN_PRESENT = 0x1;

const trimmed = (s: string) => s.replace(/[\s\0]+$/, "");

/** A loaded, initialized PKCS#11 module. One per path per process. */
export class Pkcs11Module {
  private static readonly loaded = new Map<string, Pkcs11Module>();
  private readonly sessions = new Map<string, Pkcs11Session>();

  private constructor(
    readonly path: string,
    readonly lib: P11.PKCS11,
  ) {}

  static load(path: string): Pkcs11Module {
    const cached = Pkcs11Module.loaded.get(path);
    if (cached) return cached;
    if (!existsSync(path)) {
      throw new MtlsError("E_PKCS11_MODULE", `PKCS#11 module ${path} does not exist (check --pkcs11-module)`);
    }
    const p11 = pkcs11js();
    const lib = new p11.PKCS11();
    try {
      lib.load(path);
    } catch (err) {
      throw new MtlsError(
        "E_PKCS11_MODULE",
        `cannot load PKCS#11 module ${path}: ${(err as Error).message.split("\n")[0]}`,
        { cause: err },
      );
    }
    try {
      lib.C_Initialize();
    } catch (err) {
      if (ckrOf(err) !== "CKR_CRYPTOKI_ALREADY_INITIALIZED") {
        throw new MtlsError(
          "E_PKCS11_MODULE",
          `PKCS#11 module ${path} failed to initialize: ${ckrOf(err) ?? (err as Error).message}`,
          { cause: err },
        );
      }
    }
    const module = new Pkcs11Module(path, lib);
    Pkcs11Module.loaded.set(path, module);
    return module;
  }

  /** Every slot, with its token's information when a token is present. */
  slots(): SlotEntry[] {
    try {
      return this.lib.C_GetSlotList(false).map((slot) => {
        const slotInfo = this.lib.C_GetSlotInfo(slot);
        const present = (slotInfo.flags & CKF_TOKEN_PRESENT) !== 0;
        const entry: SlotEntry = { slot, slotId: slotNumber(slot), slotInfo };
        if (present) entry.token = this.lib.C_GetTokenInfo(slot);
        return entry;
      });
    } catch (err) {
      throw pkcs11Failure(err, "listing slots");
    }
  }

  /** The one slot whose token matches the URI's token attributes (E_PKCS11_TOKEN for none or several). */
  findSlot(uri: Pkcs11Uri): SlotEntry {
    const p11 = pkcs11js();
    const matches = this.slots().filter(({ token, slotId, slotInfo }) => {
      if (!token || (token.flags & p11.CKF_TOKEN_INITIALIZED) === 0) return false;
      const checks: [string | number | undefined, string | number][] = [
        [uri.token, trimmed(token.label)],
        [uri.serial, trimmed(token.serialNumber)],
        [uri.manufacturer, trimmed(token.manufacturerID)],
        [uri.model, trimmed(token.model)],
        [uri.slotId, slotId],
        [uri.slotDescription, trimmed(slotInfo.slotDescription)],
        [uri.slotManufacturer, trimmed(slotInfo.manufacturerID)],
      ];
      return checks.every(([want, have]) => want === undefined || want === have);
    });
    const which = describeToken(uri);
    if (matches.length === 0) {
      throw new MtlsError("E_PKCS11_TOKEN", `no initialized token matches ${which} in ${this.path}`);
    }
    if (matches.length > 1) {
      throw new MtlsError(
        "E_PKCS11_TOKEN",
        `${matches.length} tokens match ${which} in ${this.path}: add token=, serial= or slot-id= to the URI`,
      );
    }
    return matches[0] as SlotEntry;
  }

  /**
   * The process's logged-in session on the token the URI names: opened and logged in on first use,
   * shared afterwards (one login per process and token).
   */
  session(uri: Pkcs11Uri, pin: string): Pkcs11Session {
    const entry = this.findSlot(uri);
    const key = trimmed(entry.token?.serialNumber ?? "") || String(entry.slotId);
    let session = this.sessions.get(key);
    if (session && !session.hasPin(pin)) {
      // The token is logged in for the whole process; another PIN must not ride on that login.
      throw new MtlsError(
        "E_PKCS11_PIN",
        `wrong PIN on token "${session.tokenLabel}" (not the PIN this process logged in with)`,
      );
    }
    if (!session) {
      session = new Pkcs11Session(this, uri, pin);
      session.open(entry);
      this.sessions.set(key, session);
    }
    return session;
  }
}

function describeToken(uri: Pkcs11Uri): string {
  const parts: string[] = [];
  if (uri.token !== undefined) parts.push(`token="${uri.token}"`);
  if (uri.serial !== undefined) parts.push(`serial=${uri.serial}`);
  if (uri.slotId !== undefined) parts.push(`slot-id=${uri.slotId}`);
  if (uri.manufacturer !== undefined) parts.push(`manufacturer="${uri.manufacturer}"`);
  if (uri.model !== undefined) parts.push(`model="${uri.model}"`);
  return parts.length ? parts.join(" ") : "the URI (it names no token)";
}

/**
 * A read-write session logged in as the user. `run()` calls the token; when the session was lost
 * (token reset, removed and reinserted, module reinitialized) it reopens and logs in once, then
 * retries the call once. `generation` grows on every reopen so callers re-find object handles.
 */
export class Pkcs11Session {
  private handle: P11.Handle | undefined;
  generation = 0;
  tokenLabel = "";

  constructor(
    readonly module: Pkcs11Module,
    private readonly uri: Pkcs11Uri,
    private readonly pin: string,
  ) {}

  open(entry: SlotEntry = this.module.findSlot(this.uri)): void {
    const p11 = pkcs11js();
    const lib = this.module.lib;
    const token = entry.token as P11.TokenInfo;
    this.tokenLabel = trimmed(token.label);
    if (token.flags & p11.CKF_USER_PIN_LOCKED) {
      throw pkcs11Failure(Object.assign(new Error("CKR_PIN_LOCKED")), "login", this.tokenLabel);
    }
    let handle: P11.Handle;
    try {
      handle = lib.C_OpenSession(entry.slot, p11.CKF_SERIAL_SESSION | p11.CKF_RW_SESSION);
    } catch (err) {
      throw pkcs11Failure(err, "opening a session", this.tokenLabel);
    }
    try {
      lib.C_Login(handle, p11.CKU_USER, this.pin);
    } catch (err) {
      if (ckrOf(err) !== "CKR_USER_ALREADY_LOGGED_IN") {
        try {
          lib.C_CloseSession(handle);
        } catch {
          // the login failure is what matters
        }
        throw pkcs11Failure(err, "login", this.tokenLabel);
      }
    }
    this.handle = handle;
    this.generation++;
  }

  private reopen(): void {
    const lib = this.module.lib;
    if (this.handle) {
      try {
        lib.C_CloseSession(this.handle);
      } catch {
        // already gone: that is why we reopen
      }
      this.handle = undefined;
    }
    try {
      lib.C_Initialize();
    } catch {
      // CKR_CRYPTOKI_ALREADY_INITIALIZED in the usual case; a real failure shows in open()
    }
    this.open();
  }

  /** Runs `fn` with the session handle; on a lost session, reopens once and runs it again. */
  run<T>(what: string, fn: (session: P11.Handle, lib: P11.PKCS11) => T): T {
    if (!this.handle) this.open();
    try {
      return fn(this.handle as P11.Handle, this.module.lib);
    } catch (err) {
      if (!isResetError(err)) throw pkcs11Failure(err, what, this.tokenLabel);
    }
    this.reopen();
    try {
      return fn(this.handle as P11.Handle, this.module.lib);
    } catch (err) {
      throw pkcs11Failure(err, what, this.tokenLabel);
    }
  }

  private queue: Promise<unknown> = Promise.resolve();

  /**
   * Like run(), for operations that wait on the token off the main thread (C_SignAsync): they are
   * queued, one at a time, because a PKCS#11 session carries one operation at a time.
   */
  runAsync<T>(what: string, fn: (session: P11.Handle, lib: P11.PKCS11) => Promise<T>): Promise<T> {
    const task = this.queue.then(() => this.attemptAsync(what, fn));
    this.queue = task.catch(() => undefined);
    return task;
  }

  private async attemptAsync<T>(
    what: string,
    fn: (session: P11.Handle, lib: P11.PKCS11) => Promise<T>,
  ): Promise<T> {
    if (!this.handle) this.open();
    try {
      return await fn(this.handle as P11.Handle, this.module.lib);
    } catch (err) {
      if (!isResetError(err)) throw pkcs11Failure(err, what, this.tokenLabel);
    }
    this.reopen();
    try {
      return await fn(this.handle as P11.Handle, this.module.lib);
    } catch (err) {
      throw pkcs11Failure(err, what, this.tokenLabel);
    }
  }

  hasPin(pin: string): boolean {
    const a = Buffer.from(pin);
    const b = Buffer.from(this.pin);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  /** For tests and tools: the raw handle of the current session. */
  get current(): P11.Handle | undefined {
    return this.handle;
  }
}

export interface PinSource {
  /** --pin-file */
  file?: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * The token PIN: from --pin-file, else MTLS_PKCS11_PIN, else the file MTLS_PKCS11_PIN_FILE names.
 * Never from a command-line argument or a URI's pin-value (both end up in `ps`, shell history and
 * logs). The file's trailing newline is dropped.
 */
export function resolvePin(source: PinSource, uri?: Pkcs11Uri): string | undefined {
  if (uri?.pinValue !== undefined) {
    throw new MtlsError(
      "E_USAGE",
      "a PIN in the PKCS#11 URI (pin-value) would show in process lists and logs: use --pin-file or MTLS_PKCS11_PIN",
    );
  }
  const env = source.env ?? process.env;
  const file = source.file ?? (env.MTLS_PKCS11_PIN === undefined ? env.MTLS_PKCS11_PIN_FILE : undefined);
  if (file) {
    try {
      return readFileSync(file, "utf8").replace(/\r?\n$/, "");
    } catch (err) {
      throw new MtlsError("E_PKCS11_PIN", `cannot read the PIN file ${file}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
  if (env.MTLS_PKCS11_PIN !== undefined) return env.MTLS_PKCS11_PIN;
  if (uri?.pinSource?.startsWith("file:")) return resolvePin({ file: uri.pinSource.slice(5), env: {} });
  return undefined;
}

export function requirePin(source: PinSource, uri?: Pkcs11Uri): string {
  const pin = resolvePin(source, uri);
  if (pin === undefined) {
    throw new MtlsError(
      "E_PKCS11_PIN",
      "the PKCS#11 token needs its PIN: --pin-file FILE (init, hsm), or MTLS_PKCS11_PIN_FILE or MTLS_PKCS11_PIN in the environment",
    );
  }
  return pin;
}

/** The module to load: --pkcs11-module, else the URI's module-path, else MTLS_PKCS11_MODULE. */
export function resolveModulePath(flag: string | undefined, uri?: Pkcs11Uri, env = process.env): string {
  const path = flag ?? uri?.modulePath ?? env.MTLS_PKCS11_MODULE;
  if (!path) {
    throw new MtlsError(
      "E_PKCS11_MODULE",
      "no PKCS#11 module given: use --pkcs11-module PATH (e.g. /usr/lib/softhsm/libsofthsm2.so) or MTLS_PKCS11_MODULE",
    );
  }
  return path;
}
