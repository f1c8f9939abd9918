/**
 * The handshake transcript (RFC 8446 section 4.4.1): the messages so far, hashed on demand with the
 * suite's hash, and the HelloRetryRequest rule that replaces ClientHello1 by a message_hash message.
 */
import { concat } from "./bytes.js";
import { digest } from "./key-schedule.js";
import { HandshakeType } from "./messages.js";

export class Transcript {
  private messages: Uint8Array[] = [];

  add(raw: Uint8Array): void {
    this.messages.push(raw);
  }

  hash(hash: string): Promise<Uint8Array> {
    return digest(hash, concat(this.messages));
  }

  /** Replaces everything so far (ClientHello1) with message_hash || 00 00 Hash.length || Hash(ClientHello1). */
  async replaceWithMessageHash(hash: string): Promise<void> {
    const h = await this.hash(hash);
    const synthetic = new Uint8Array(4 + h.length);
    synthetic[0] = HandshakeType.message_hash;
    synthetic[3] = h.length;
    synthetic.set(h, 4);
    this.messages = [synthetic];
  }
}
