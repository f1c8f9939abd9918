/**
 * The TLS 1.3 client (RFC 8446): the handshake state machine (full handshake with (EC)DHE, optional
 * HelloRetryRequest, server certificate authentication, optional client certificate), then the
 * connection as a ByteStream with KeyUpdate and close_notify. Every violation by the server ends the
 * connection with a fatal alert sent to it and a TlsAlertError thrown to the caller.
 */
import { MtlsError } from "../../errors.js";
import type { ByteStream } from "../stream.js";
import {
  ecdsaRawToDer,
  isCertificateVerifyScheme,
  SIGNATURE_SCHEMES,
  verifySchemeSignature,
  verifyServerChain,
} from "../x509/index.js";
import { Alert, fatal, TlsAlertError } from "./alerts.js";
import { concat, equalBytes, randomBytes } from "./bytes.js";
import { type CipherSuite, cipherSuiteByName, DEFAULT_CIPHER_SUITES } from "./cipher-suites.js";
import { KeySchedule } from "./key-schedule.js";
import { GROUP_IDS, type GroupName, generateKeyShare, groupById, type KeyShare } from "./key-share.js";
import {
  type CertificateRequest,
  certificateVerifyContent,
  checkNewSessionTicket,
  decodeCertificate,
  decodeCertificateRequest,
  decodeCertificateVerify,
  decodeEncryptedExtensions,
  decodeKeyUpdate,
  decodeServerHello,
  encodeCertificate,
  encodeCertificateVerify,
  encodeClientHello,
  encodeFinished,
  encodeKeyUpdate,
  HandshakeBuffer,
  type HandshakeMessage,
  HandshakeType,
} from "./messages.js";
import { ContentType, MAX_PLAINTEXT, RecordProtection, RecordReader, RecordWriter } from "./record.js";
import { Transcript } from "./transcript.js";

export interface ClientIdentity {
  /** Client certificate chain, leaf first, DER. */
  chain: Uint8Array[];
  /** TLS SignatureScheme of the key: 0x0403 for the key store's ECDSA P-256 keys. */
  scheme: number;
  /** Signs with WebCrypto's signature format (raw r||s for ECDSA); TLS re-encodes ECDSA to DER. */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

export interface TlsClientOptions {
  serverName: string;
  /** DER roots the server's chain must lead to. */
  trustAnchors: Uint8Array[];
  identity?: ClientIdentity;
  /** Default ["x25519", "secp256r1"]; a key share is sent for the first only. */
  groups?: Array<"x25519" | "secp256r1">;
  cipherSuites?: Array<"TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256">;
  alpn?: string[];
  now?: () => Date;
  /** Default 30 s. */
  handshakeTimeoutMs?: number;
}

export interface TlsConnection extends ByteStream {
  readonly cipherSuite: string;
  readonly group: string;
  readonly alpn: string | null;
  readonly helloRetried: boolean;
  readonly serverCertificates: Uint8Array[];
  /** Sends a KeyUpdate and moves to the next write key; with requestPeer the server updates its key too. */
  keyUpdate(requestPeer: boolean): Promise<void>;
}

/** Tuning not in the public options. */
export interface TlsClientLimits {
  /** Records under one write key before the client updates it by itself (AES-GCM usage limit). */
  keyUpdateAfterRecords: number;
}

const DEFAULT_LIMITS: TlsClientLimits = { keyUpdateAfterRecords: 2 ** 24 };
/** Application data handed to the record layer per step, so automatic KeyUpdates can land between. */
const WRITE_SLICE = 32 * MAX_PLAINTEXT;

const ECDSA_SCHEMES: ReadonlySet<number> = new Set([0x0403, 0x0503, 0x0603]);

/** Every error of mtls/web is an MtlsError: transport failures are wrapped (E_TLS, with the cause). */
function asMtlsError(err: unknown, what: string): MtlsError {
  if (err instanceof MtlsError) return err;
  return new MtlsError("E_TLS", `${what}: ${err instanceof Error ? err.message : String(err)}`, {
    cause: err,
  });
}

/** `p`, or `fallback` once `ms` have passed. */
function within<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<T>((r) => {
    timer = setTimeout(() => r(fallback), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

function reasonAlert(reason: string): number {
  if (reason === "untrusted") return Alert.unknown_ca;
  if (reason === "expired") return Alert.certificate_expired;
  return Alert.bad_certificate;
}

export function connectTls(transport: ByteStream, options: TlsClientOptions): Promise<TlsConnection> {
  return connectTlsWithLimits(transport, options, DEFAULT_LIMITS);
}

export async function connectTlsWithLimits(
  transport: ByteStream,
  options: TlsClientOptions,
  limits: TlsClientLimits,
): Promise<TlsConnection> {
  const suites: CipherSuite[] = [];
  for (const name of options.cipherSuites ?? DEFAULT_CIPHER_SUITES) {
    const suite = cipherSuiteByName(name);
    if (!suite) throw new MtlsError("E_TLS", `cipher suite ${name} has no registered implementation`);
    suites.push(suite);
  }
  const groups = options.groups ?? ["x25519", "secp256r1"];
  if (suites.length === 0 || groups.length === 0)
    throw new MtlsError("E_TLS", "no cipher suite or group to offer");
  for (const g of groups) if (!(g in GROUP_IDS)) throw new MtlsError("E_TLS", `unsupported group ${g}`);
  const conn = new Connection(transport, options, limits, suites, groups);
  const timeoutMs = options.handshakeTimeoutMs ?? 30_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = new MtlsError("E_TLS", `TLS handshake did not finish within ${timeoutMs} ms`);
      conn.abort(err);
      reject(err);
    }, timeoutMs);
  });
  try {
    await Promise.race([conn.handshake(), timeout]);
  } finally {
    clearTimeout(timer);
  }
  return conn;
}

class Connection implements TlsConnection {
  cipherSuite = "";
  group = "";
  alpn: string | null = null;
  helloRetried = false;
  serverCertificates: Uint8Array[] = [];

  private readonly reader: RecordReader;
  private readonly writer: RecordWriter;
  private readonly hs = new HandshakeBuffer();
  private schedule: KeySchedule | null = null;
  private clientSecret: Uint8Array = new Uint8Array(0);
  private serverSecret: Uint8Array = new Uint8Array(0);
  /** Until the server's Finished: ChangeCipherSpec records are tolerated. */
  private handshaking = true;
  private established = false;
  private failure: MtlsError | null = null;
  private writeFailure: MtlsError | null = null;
  private peerClosed = false;
  private closed = false;
  private writeChain: Promise<void> = Promise.resolve();
  private readChain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly transport: ByteStream,
    private readonly options: TlsClientOptions,
    private readonly limits: TlsClientLimits,
    private readonly suites: CipherSuite[],
    private readonly groups: GroupName[],
  ) {
    this.reader = new RecordReader(transport);
    this.writer = new RecordWriter(transport);
  }

  // ---- failure handling ----

  /** Ends the connection for `err`: sends the alert it names (if we detected it), closes the transport. */
  private async fail(err: unknown): Promise<never> {
    if (this.failure) throw this.failure;
    const error = asMtlsError(err, "the TLS connection failed");
    this.failure = error;
    if (error instanceof TlsAlertError && error.direction === "sent") {
      const alert = new Uint8Array([2, error.alert]);
      const sending = this.writeChain.then(() => this.writer.write(ContentType.alert, alert));
      await within(
        sending.catch(() => {}),
        1000,
        undefined,
      );
    }
    await this.transport.close().catch(() => {});
    throw error;
  }

  /** Handshake timeout: stop without an alert. */
  abort(err: MtlsError): void {
    if (this.failure) return;
    this.failure = err;
    this.transport.close().catch(() => {});
  }

  private async guarded<T>(work: () => Promise<T>): Promise<T> {
    if (this.failure) throw this.failure;
    try {
      return await work();
    } catch (err) {
      return this.fail(err);
    }
  }

  /**
   * For writes after the handshake. A transport failure on the write side ends writing only: the
   * server may have sent a fatal alert and closed, and the next read() should still report that alert.
   */
  private async writeGuarded<T>(work: () => Promise<T>): Promise<T> {
    if (this.failure) throw this.failure;
    if (this.writeFailure) throw this.writeFailure;
    try {
      return await work();
    } catch (err) {
      if (this.failure) throw this.failure;
      if (err instanceof TlsAlertError) return this.fail(err);
      this.writeFailure = asMtlsError(err, "the transport failed while writing");
      throw this.writeFailure;
    }
  }

  // ---- reading records ----

  private alertRecord(fragment: Uint8Array): "close" | "ignore" {
    if (fragment.length !== 2) throw fatal(Alert.decode_error, "alert record is not 2 bytes");
    const description = fragment[1] as number;
    if (description === Alert.close_notify) return "close";
    if (description === Alert.user_canceled) return "ignore";
    throw new TlsAlertError(description, "received");
  }

  /** The next handshake message during the handshake; CCS tolerated, anything else refused. */
  private async nextHandshake(): Promise<HandshakeMessage> {
    for (;;) {
      const msg = this.hs.next();
      if (msg) return msg;
      const rec = await this.reader.next();
      if (rec === null) throw new MtlsError("E_TLS", "the server closed the connection during the handshake");
      switch (rec.type) {
        case ContentType.handshake:
          this.hs.push(rec.fragment);
          break;
        case ContentType.change_cipher_spec:
          if (!this.handshaking || rec.fragment.length !== 1 || rec.fragment[0] !== 1 || this.hs.pending) {
            throw fatal(Alert.unexpected_message, "unexpected change_cipher_spec record");
          }
          break;
        case ContentType.alert:
          if (this.alertRecord(rec.fragment) === "close") {
            throw new TlsAlertError(Alert.close_notify, "received", "the server closed during the handshake");
          }
          break;
        default:
          throw fatal(Alert.unexpected_message, `record of type ${rec.type} during the handshake`);
      }
    }
  }

  /**
   * A write failed: if the server has just sent a fatal alert (e.g. certificate_required) and closed,
   * that alert is the better error. Looks at what is already on its way for up to a second.
   */
  private async peerAlertOr(err: unknown): Promise<unknown> {
    const look = (async () => {
      for (;;) {
        const rec = await this.reader.next();
        if (rec === null) return err;
        if (
          rec.type === ContentType.alert &&
          rec.fragment.length === 2 &&
          rec.fragment[1] !== Alert.close_notify
        ) {
          return new TlsAlertError(rec.fragment[1] as number, "received", undefined, { cause: err });
        }
      }
    })().catch(() => err);
    return within(look, 1000, err);
  }

  private async expect(type: number, what: string): Promise<HandshakeMessage> {
    const msg = await this.nextHandshake();
    if (msg.type !== type)
      throw fatal(Alert.unexpected_message, `expected ${what}, got handshake message ${msg.type}`);
    return msg;
  }

  /** A key change must fall on a record boundary (RFC 8446 section 5.1). */
  private checkKeyBoundary(what: string): void {
    if (this.hs.pending)
      throw fatal(Alert.unexpected_message, `handshake data after ${what} in the same record`);
  }

  private async protection(secret: Uint8Array): Promise<RecordProtection> {
    const ks = this.schedule as KeySchedule;
    const { key, iv } = await ks.trafficKeys(secret);
    return new RecordProtection(await ks.suite.aead.create(key), iv, ks.suite.aead.tagLength);
  }

  // ---- the handshake ----

  handshake(): Promise<void> {
    return this.guarded(() => this.runHandshake());
  }

  private async runHandshake(): Promise<void> {
    const o = this.options;
    const groupIds = this.groups.map((g) => GROUP_IDS[g]);
    const sessionId = randomBytes(32);
    const random = randomBytes(32);
    let share: KeyShare = await generateKeyShare(this.groups[0] as GroupName);
    const hello = (cookie?: Uint8Array) =>
      encodeClientHello({
        random,
        sessionId,
        cipherSuites: this.suites.map((s) => s.id),
        serverName: o.serverName,
        groups: groupIds,
        keyShare: { group: GROUP_IDS[share.group], publicKey: share.publicKey },
        signatureSchemes: SIGNATURE_SCHEMES,
        alpn: o.alpn,
        cookie,
      });
    const transcript = new Transcript();
    let ch = hello();
    await this.writer.write(ContentType.handshake, ch.message);
    transcript.add(ch.message);

    let msg = await this.expect(HandshakeType.server_hello, "ServerHello");
    let sh = decodeServerHello(msg.body, sessionId, ch.offered);
    const suiteOf = (id: number) => {
      const suite = this.suites.find((s) => s.id === id);
      if (!suite)
        throw fatal(Alert.illegal_parameter, `server selected cipher suite 0x${id.toString(16)} not offered`);
      return suite;
    };
    let suite = suiteOf(sh.cipherSuite);
    if (sh.isHelloRetryRequest) {
      const selected = sh.keyShareGroup === null ? null : groupById(sh.keyShareGroup);
      if (sh.keyShareGroup !== null && (!selected || !this.groups.includes(selected))) {
        throw fatal(Alert.illegal_parameter, "HelloRetryRequest selects a group not offered");
      }
      if (selected === share.group)
        throw fatal(Alert.illegal_parameter, "HelloRetryRequest selects the group already sent");
      if (selected === null && sh.cookie === null) {
        throw fatal(Alert.illegal_parameter, "HelloRetryRequest would not change the ClientHello");
      }
      this.helloRetried = true;
      await transcript.replaceWithMessageHash(suite.hash);
      transcript.add(msg.raw);
      if (selected) share = await generateKeyShare(selected);
      ch = hello(sh.cookie ?? undefined);
      await this.writer.write(ContentType.handshake, ch.message);
      transcript.add(ch.message);
      msg = await this.expect(HandshakeType.server_hello, "ServerHello");
      sh = decodeServerHello(msg.body, sessionId, ch.offered);
      if (sh.isHelloRetryRequest) throw fatal(Alert.unexpected_message, "a second HelloRetryRequest");
      if (sh.cipherSuite !== suite.id) {
        throw fatal(Alert.illegal_parameter, "ServerHello cipher suite differs from the HelloRetryRequest's");
      }
    }
    suite = suiteOf(sh.cipherSuite);
    if (!sh.hasKeyShare || sh.keyShare === null)
      throw fatal(Alert.missing_extension, "ServerHello without key_share");
    if (sh.keyShareGroup !== GROUP_IDS[share.group]) {
      throw fatal(Alert.illegal_parameter, "ServerHello key share is for a group the client did not send");
    }
    transcript.add(msg.raw);
    this.cipherSuite = suite.name;
    this.group = share.group;
    const ks = new KeySchedule(suite);
    this.schedule = ks;
    const shared = await share.agree(sh.keyShare);
    const handshakeSecret = await ks.handshakeSecret(shared);
    let h = await transcript.hash(ks.hash);
    const clientHs = await ks.deriveSecret(handshakeSecret, "c hs traffic", h);
    const serverHs = await ks.deriveSecret(handshakeSecret, "s hs traffic", h);
    this.checkKeyBoundary("ServerHello");
    this.reader.setProtection(await this.protection(serverHs));
    // From here on our records, alerts included, go under the client handshake key.
    this.writer.setProtection(await this.protection(clientHs));

    msg = await this.expect(HandshakeType.encrypted_extensions, "EncryptedExtensions");
    this.alpn = decodeEncryptedExtensions(msg.body, ch.offered, o.alpn ?? []).alpn;
    transcript.add(msg.raw);

    msg = await this.nextHandshake();
    let certRequest: CertificateRequest | null = null;
    if (msg.type === HandshakeType.certificate_request) {
      certRequest = decodeCertificateRequest(msg.body);
      if (certRequest.context.length !== 0) {
        throw fatal(Alert.illegal_parameter, "CertificateRequest context must be empty in the handshake");
      }
      transcript.add(msg.raw);
      msg = await this.nextHandshake();
    }
    if (msg.type !== HandshakeType.certificate) {
      throw fatal(Alert.unexpected_message, `expected Certificate, got handshake message ${msg.type}`);
    }
    const cert = decodeCertificate(msg.body);
    if (cert.context.length !== 0)
      throw fatal(Alert.illegal_parameter, "server Certificate has a request context");
    if (cert.certificates.length === 0) throw fatal(Alert.decode_error, "server sent no certificate");
    transcript.add(msg.raw);
    let leafSpki: Uint8Array;
    try {
      ({ leafSpki } = await verifyServerChain({
        certificates: cert.certificates,
        trustAnchors: o.trustAnchors,
        serverName: o.serverName,
        now: (o.now ?? (() => new Date()))(),
      }));
    } catch (err) {
      const reason = (err as { reason?: unknown }).reason;
      if (typeof reason !== "string") throw err;
      throw fatal(
        reasonAlert(reason),
        `server certificate refused (${reason}): ${(err as Error).message}`,
        err,
      );
    }
    this.serverCertificates = cert.certificates;

    msg = await this.expect(HandshakeType.certificate_verify, "CertificateVerify");
    const cv = decodeCertificateVerify(msg.body);
    if (!SIGNATURE_SCHEMES.includes(cv.scheme) || !isCertificateVerifyScheme(cv.scheme)) {
      throw fatal(
        Alert.illegal_parameter,
        `CertificateVerify uses scheme 0x${cv.scheme.toString(16)} not offered for it`,
      );
    }
    h = await transcript.hash(ks.hash);
    let good = false;
    try {
      good = await verifySchemeSignature(
        leafSpki,
        cv.scheme,
        certificateVerifyContent("server", h),
        cv.signature,
      );
    } catch (err) {
      throw fatal(Alert.decrypt_error, "server CertificateVerify could not be checked", err);
    }
    if (!good) throw fatal(Alert.decrypt_error, "server CertificateVerify signature does not verify");
    transcript.add(msg.raw);

    msg = await this.expect(HandshakeType.finished, "Finished");
    h = await transcript.hash(ks.hash);
    const expected = await ks.finishedData(serverHs, h);
    if (msg.body.length !== expected.length)
      throw fatal(Alert.decode_error, "server Finished has the wrong length");
    if (!equalBytes(msg.body, expected)) throw fatal(Alert.decrypt_error, "server Finished does not verify");
    transcript.add(msg.raw);
    this.checkKeyBoundary("Finished");
    this.handshaking = false;
    h = await transcript.hash(ks.hash);
    const master = await ks.masterSecret(handshakeSecret);
    this.clientSecret = await ks.deriveSecret(master, "c ap traffic", h);
    this.serverSecret = await ks.deriveSecret(master, "s ap traffic", h);
    this.reader.setProtection(await this.protection(this.serverSecret));

    // Our flight: a middlebox-compatibility CCS, then Certificate, CertificateVerify, Finished.
    await this.writer.write(ContentType.change_cipher_spec, new Uint8Array([1]));
    const flight: Uint8Array[] = [];
    if (certRequest) {
      const id = o.identity;
      const usable =
        id && id.chain.length > 0 && certRequest.signatureSchemes.includes(id.scheme) ? id : null;
      const certMsg = encodeCertificate(certRequest.context, usable ? usable.chain : []);
      transcript.add(certMsg);
      flight.push(certMsg);
      if (usable) {
        const content = certificateVerifyContent("client", await transcript.hash(ks.hash));
        let signature = await usable.sign(content);
        if (ECDSA_SCHEMES.has(usable.scheme)) signature = ecdsaRawToDer(signature);
        const cvMsg = encodeCertificateVerify(usable.scheme, signature);
        transcript.add(cvMsg);
        flight.push(cvMsg);
      }
    }
    const fin = encodeFinished(await ks.finishedData(clientHs, await transcript.hash(ks.hash)));
    flight.push(fin);
    try {
      await this.writer.write(ContentType.handshake, concat(flight));
    } catch (err) {
      throw await this.peerAlertOr(err);
    }
    this.writer.setProtection(await this.protection(this.clientSecret));
    this.established = true;
  }

  // ---- after the handshake ----

  read(): Promise<Uint8Array | null> {
    const next = this.readChain.then(() => this.guarded(() => this.readApplicationData()));
    this.readChain = next.catch(() => {});
    return next;
  }

  private async readApplicationData(): Promise<Uint8Array | null> {
    for (;;) {
      if (this.peerClosed || this.closed) return null;
      const rec = await this.reader.next();
      if (rec === null) {
        if (this.closed) return null;
        throw new MtlsError("E_TLS", "the connection was closed without close_notify (truncated)");
      }
      switch (rec.type) {
        case ContentType.application_data:
          if (this.hs.pending)
            throw fatal(Alert.unexpected_message, "application data inside a handshake message");
          if (rec.fragment.length > 0) return rec.fragment;
          break;
        case ContentType.handshake:
          this.hs.push(rec.fragment);
          await this.postHandshakeMessages();
          break;
        case ContentType.alert:
          if (this.alertRecord(rec.fragment) === "close") {
            this.peerClosed = true;
            return null;
          }
          break;
        default:
          throw fatal(Alert.unexpected_message, `record of type ${rec.type} after the handshake`);
      }
    }
  }

  private async postHandshakeMessages(): Promise<void> {
    for (let msg = this.hs.next(); msg; msg = this.hs.next()) {
      if (msg.type === HandshakeType.new_session_ticket) {
        checkNewSessionTicket(msg.body);
      } else if (msg.type === HandshakeType.key_update) {
        const requested = decodeKeyUpdate(msg.body);
        this.checkKeyBoundary("KeyUpdate");
        const ks = this.schedule as KeySchedule;
        this.serverSecret = await ks.nextTrafficSecret(this.serverSecret);
        this.reader.setProtection(await this.protection(this.serverSecret));
        // Not awaited: a reader must never wait for the writer (the peer may be waiting for us to read).
        if (requested) {
          this.writeGuarded(() => this.enqueueWrite(() => this.updateWriteKey(false))).catch(() => {});
        }
      } else {
        throw fatal(Alert.unexpected_message, `handshake message ${msg.type} after the handshake`);
      }
    }
  }

  /** Sends KeyUpdate under the current key, then switches to the next client secret. Inside the write chain. */
  private async updateWriteKey(requestPeer: boolean): Promise<void> {
    await this.writer.write(ContentType.handshake, encodeKeyUpdate(requestPeer));
    const ks = this.schedule as KeySchedule;
    this.clientSecret = await ks.nextTrafficSecret(this.clientSecret);
    this.writer.setProtection(await this.protection(this.clientSecret));
  }

  private enqueueWrite(work: () => Promise<void>): Promise<void> {
    const next = this.writeChain.then(() => {
      if (this.failure) throw this.failure;
      if (this.writeFailure) throw this.writeFailure;
      return work();
    });
    this.writeChain = next.catch(() => {});
    return next;
  }

  write(data: Uint8Array): Promise<void> {
    if (this.closed)
      return Promise.reject(this.failure ?? new MtlsError("E_TLS", "the TLS connection is closed"));
    if (data.length === 0) return Promise.resolve();
    return this.writeGuarded(() =>
      this.enqueueWrite(async () => {
        for (let at = 0; at < data.length; at += WRITE_SLICE) {
          if (this.writer.sequence >= this.limits.keyUpdateAfterRecords) await this.updateWriteKey(false);
          await this.writer.write(ContentType.application_data, data.subarray(at, at + WRITE_SLICE));
        }
      }),
    );
  }

  keyUpdate(requestPeer: boolean): Promise<void> {
    if (this.closed)
      return Promise.reject(this.failure ?? new MtlsError("E_TLS", "the TLS connection is closed"));
    return this.writeGuarded(() => this.enqueueWrite(() => this.updateWriteKey(requestPeer)));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.established && !this.failure && !this.writeFailure) {
      const notify = new Uint8Array([1, Alert.close_notify]);
      const sending = this.enqueueWrite(() => this.writer.write(ContentType.alert, notify));
      await within(
        sending.catch(() => {}),
        1000,
        undefined,
      );
    }
    await this.transport.close().catch(() => {});
  }
}
