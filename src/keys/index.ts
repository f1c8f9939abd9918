export { loadEncryptedKey, loadSoftwareSigner, saveEncryptedKey } from "./software.js";
