/**
 * (EC)DHE key shares: X25519 and secp256r1 through WebCrypto. A server share of the wrong size, not
 * on the curve, or giving an all-zero X25519 secret is an illegal_parameter.
 */
import { bs } from "./aead.js";
import { Alert, fatal } from "./alerts.js";

export type GroupName = "x25519" | "secp256r1";

export const GROUP_IDS: Record<GroupName, number> = { x25519: 0x001d, secp256r1: 0x0017 };

export function groupById(id: number): GroupName | undefined {
  if (id === 0x001d) return "x25519";
  if (id === 0x0017) return "secp256r1";
  return undefined;
}

export interface KeyShare {
  group: GroupName;
  /** key_exchange as sent in the ClientHello. */
  publicKey: Uint8Array;
  /** The shared secret with the server's key_exchange. */
  agree(peer: Uint8Array): Promise<Uint8Array>;
}

function algorithm(group: GroupName): EcKeyImportParams | Algorithm {
  return group === "x25519" ? { name: "X25519" } : { name: "ECDH", namedCurve: "P-256" };
}

export async function generateKeyShare(group: GroupName): Promise<KeyShare> {
  const subtle = globalThis.crypto.subtle;
  const alg = algorithm(group);
  const pair = (await subtle.generateKey(alg, false, ["deriveBits"])) as CryptoKeyPair;
  const publicKey = new Uint8Array(await subtle.exportKey("raw", pair.publicKey));
  const size = group === "x25519" ? 32 : 65;
  return {
    group,
    publicKey,
    async agree(peer) {
      if (peer.length !== size || (group === "secp256r1" && peer[0] !== 4)) {
        throw fatal(Alert.illegal_parameter, `server ${group} key share has the wrong form`);
      }
      let secret: Uint8Array;
      try {
        const peerKey = await subtle.importKey("raw", bs(peer), alg, false, []);
        secret = new Uint8Array(
          await subtle.deriveBits(
            { name: alg.name, public: peerKey } as EcdhKeyDeriveParams,
            pair.privateKey,
            256,
          ),
        );
      } catch (err) {
        throw fatal(Alert.illegal_parameter, `server ${group} key share is not a valid point`, err);
      }
      if (secret.every((b) => b === 0))
        throw fatal(Alert.illegal_parameter, `server ${group} key share gives a zero secret`);
      return secret;
    },
  };
}
