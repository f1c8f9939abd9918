export { formatDuration, parseDuration } from "./duration.js";
export { commitFile, readFileOrThrow, stageFile, writeFileAtomic } from "./files.js";
export { type PassphraseSource, requirePassphrase, resolvePassphrase } from "./passphrase.js";
export { ensureStateDirs, hasCa, requireCa, resolveStateDir, type StatePaths, statePaths } from "./state.js";
