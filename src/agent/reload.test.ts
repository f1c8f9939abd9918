import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { isMtlsError } from "../errors.js";
import { runReload } from "./reload.js";

const dir = mkdtempSync(join(tmpdir(), "mtls-agent-reload-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const ctx = {
  name: "web",
  cert: "/etc/mtls/web.crt",
  key: "/etc/mtls/web.key",
  serial: "0a1b",
  notAfter: new Date("2030-01-01T00:00:00Z"),
};

describe("runReload", () => {
  test("a command list runs as argv: no shell sees it", async () => {
    const out = join(dir, "argv.txt");
    // `;` and `$(...)` would mean something to a shell; as argv they are plain text.
    await runReload(
      {
        kind: "command",
        argv: [
          process.execPath,
          "-e",
          "require('fs').writeFileSync(process.argv[1], process.argv[2])",
          out,
          "a; $(rm -rf x)",
        ],
        shell: false,
        timeoutMs: 10_000,
      },
      ctx,
    );
    assert.equal(readFileSync(out, "utf8"), "a; $(rm -rf x)");
  });

  test("a command string runs by sh -c; the certificate reaches it as environment variables", async () => {
    const out = join(dir, "env.txt");
    await runReload(
      {
        kind: "command",
        argv: [
          `echo "$MTLS_CERT_NAME $MTLS_CERT_FILE $MTLS_KEY_FILE $MTLS_CERT_SERIAL $MTLS_CERT_NOT_AFTER" > '${out}'`,
        ],
        shell: true,
        timeoutMs: 10_000,
      },
      ctx,
    );
    assert.equal(
      readFileSync(out, "utf8"),
      "web /etc/mtls/web.crt /etc/mtls/web.key 0a1b 2030-01-01T00:00:00.000Z\n",
    );
  });

  test("a failing, missing or hanging command is an E_IO error with its output", async () => {
    await assert.rejects(
      runReload({ kind: "command", argv: ["echo nope >&2; exit 3"], shell: true, timeoutMs: 10_000 }, ctx),
      (e) => isMtlsError(e, "E_IO") && /exited with 3: nope/.test(e.message),
    );
    await assert.rejects(
      runReload({ kind: "command", argv: ["/nonexistent/cmd"], shell: false, timeoutMs: 10_000 }, ctx),
      (e) => isMtlsError(e, "E_IO") && /cannot run the reload command/.test(e.message),
    );
    await assert.rejects(
      runReload({ kind: "command", argv: ["sleep", "10"], shell: false, timeoutMs: 200 }, ctx),
      (e) => isMtlsError(e, "E_IO") && /ran longer than 200 ms and was killed/.test(e.message),
    );
  });

  test("signal: the pid from the pid file gets it", async () => {
    const child = spawn(
      process.execPath,
      [
        "-e",
        "process.on('SIGHUP', () => { console.log('hup'); process.exit(0) }); console.log('ready'); setInterval(() => {}, 1000)",
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      let output = "";
      child.stdout.on("data", (d) => {
        output += d;
      });
      for (let i = 0; i < 100 && !output.includes("ready"); i++) await new Promise((r) => setTimeout(r, 50));
      const pidFile = join(dir, "svc.pid");
      writeFileSync(pidFile, `${child.pid}\n`);
      const said = await runReload({ kind: "signal", signal: "SIGHUP", pidFile }, ctx);
      assert.equal(said, `sent SIGHUP to pid ${child.pid}`);
      const [code] = (await once(child, "exit")) as [number];
      assert.equal(code, 0);
      assert.match(output, /hup/);
    } finally {
      child.kill("SIGKILL");
    }
  });

  test("signal: a missing, garbled or stale pid file is an error", async () => {
    await assert.rejects(
      runReload({ kind: "signal", signal: "SIGHUP", pidFile: join(dir, "none.pid") }, ctx),
      /cannot read the pid file/,
    );
    writeFileSync(join(dir, "bad.pid"), "nginx\n");
    await assert.rejects(
      runReload({ kind: "signal", signal: "SIGHUP", pidFile: join(dir, "bad.pid") }, ctx),
      /does not hold a process id/,
    );
    writeFileSync(join(dir, "one.pid"), "1\n");
    await assert.rejects(
      runReload({ kind: "signal", signal: "SIGHUP", pidFile: join(dir, "one.pid") }, ctx),
      /does not hold a process id/,
      "never signals init",
    );
    writeFileSync(join(dir, "stale.pid"), "4000000\n");
    await assert.rejects(
      runReload({ kind: "signal", signal: "SIGHUP", pidFile: join(dir, "stale.pid") }, ctx),
      /no such process/,
    );
  });
});
