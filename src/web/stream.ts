/**
 * The one byte-stream shape of `mtls/web`: a WebSocket to the relay, the TLS connection spoken over it,
 * and (in Node tests) a TCP socket all look like this, so TLS runs over any of them and HTTP over TLS.
 * Pull-based: the reader asks for the next chunk, so a slow reader slows the sender (back-pressure).
 */
export interface ByteStream {
  /** The next chunk of bytes (never empty), or null once the peer has closed its side. Rejects on error. */
  read(): Promise<Uint8Array | null>;
  /** Sends bytes; resolves when the transport has taken them. Rejects once the stream is closed or broken. */
  write(data: Uint8Array): Promise<void>;
  /** Closes the stream (a TLS connection sends close_notify first). Idempotent. */
  close(): Promise<void>;
}
