import { type FSWatcher, watch } from "node:fs";
import { basename, dirname, resolve } from "node:path";

export interface FileWatch {
  close(): void;
}

/**
 * Calls `onChange` after `file` changed and things went quiet for `debounceMs`. The folder is
 * watched, not the file: editors and deployment tools replace a file (write a temp file, rename),
 * which leaves a watch on the file itself looking at the old, unlinked inode. Kubernetes ConfigMap
 * volumes swap a "..data" symlink, which counts as a change too.
 */
export function watchFile(
  file: string,
  onChange: () => void,
  opts: { debounceMs?: number; onError?: (err: Error) => void } = {},
): FileWatch {
  const abs = resolve(file);
  const name = basename(abs);
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let watcher: FSWatcher | undefined;
  const fire = () => {
    if (closed) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      if (!closed) onChange();
    }, opts.debounceMs ?? 200);
  };
  try {
    watcher = watch(dirname(abs), { persistent: false }, (_event, filename) => {
      const f = filename?.toString();
      if (f === undefined || f === name || f.startsWith("..")) fire();
    });
    watcher.on("error", (err) => opts.onError?.(err));
  } catch (err) {
    opts.onError?.(err as Error);
  }
  return {
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      watcher?.close();
    },
  };
}
