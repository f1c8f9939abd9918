/**
 * End-to-end: FTP through `mtls tunnel server|client --protocol ftp` (issue 3) with real software
 * we did not write. vsftpd (passive mode, anonymous, an upload folder) runs as a child on
 * 127.0.0.1 behind the built CLI's tunnel server; curl and lftp talk to the tunnel client and list,
 * upload and download 5 MB of random bytes, byte for byte, with EPSV and with PASV. Active mode is
 * refused with the tunnel's 502 and never reaches vsftpd (its protocol log proves it), and a data
 * connection presenting another client certificate with a stolen token is refused.
 *
 * Needs the Debian packages vsftpd, lftp and curl, and root (vsftpd chroots anonymous sessions).
 * Every wait is bounded; every child is killed in `after`.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import { command, FtpReplyReader } from "../fixtures/ftp.js";
import {
  assertOk,
  type Background,
  CLI,
  freePort,
  mtls,
  requireTool,
  run,
  startBackground,
  tempDir,
  withTimeout,
} from "./helpers.js";

const ENV = { MTLS_PASSPHRASE: "e2e-ftp-passphrase" };
const FIVE_MB = 5 * 1024 * 1024;

let dir: string;
let cleanup: () => void;
let vsftpd: ChildProcess | undefined;
let vsftpdOutput = "";
let ftpPort: number;
const running: Background[] = [];
let server: { bg: Background; port: number; status: number };
let client: { bg: Background; port: number; status: number };
let payload: string;
let payloadSha: string;

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const certs = (name: string) => ({
  cert: join(dir, "certs", `${name}.crt`),
  key: join(dir, "certs", `${name}.key`),
  ca: join(dir, "certs", "ca.crt"),
});
const certFlags = (name: string) => {
  const c = certs(name);
  return ["--cert", c.cert, "--key", c.key, "--ca", c.ca];
};
const root = () => join(dir, "root");
const vsftpdLog = () => join(dir, "vsftpd.log");

/** `count` consecutive TCP ports on 127.0.0.1 that were free a moment ago (for the passive range). */
async function freeRange(count: number): Promise<number> {
  const canBind = (port: number) =>
    new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once("error", () => resolve(false));
      s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 30_000 + Math.floor(Math.random() * 25_000);
    let ok = true;
    for (let p = base; p < base + count && ok; p++) ok = await canBind(p);
    if (ok) return base;
  }
  throw new Error(`no ${count} consecutive free ports found`);
}

/** Resolves once 127.0.0.1:port answers with an FTP greeting; rejects after `ms`. */
async function waitForGreeting(port: number, ms: number): Promise<void> {
  const end = Date.now() + ms;
  let last = "";
  while (Date.now() < end) {
    if (vsftpd?.exitCode !== null && vsftpd?.exitCode !== undefined) break;
    try {
      const s = connect(port, "127.0.0.1");
      const [chunk] = (await withTimeout(once(s, "data"), 1000, "greeting")) as [Buffer];
      s.destroy();
      if (chunk.toString().startsWith("220")) return;
      last = chunk.toString();
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`vsftpd did not greet on 127.0.0.1:${port} (${last}); its output:\n${vsftpdOutput}`);
}

async function startVsftpd(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("the FTP end-to-end test runs vsftpd, which needs root");
  if (
    !readFileSync("/etc/passwd", "utf8")
      .split("\n")
      .some((l) => l.startsWith("ftp:"))
  ) {
    throw new Error('vsftpd needs the "ftp" user (the Debian package vsftpd creates it)');
  }
  // The chroot: owned by root and not writable by the ftp user; uploads go to a 0777 folder in it.
  chmodSync(dir, 0o755);
  mkdirSync(join(root(), "upload"), { recursive: true });
  chmodSync(root(), 0o755);
  chmodSync(join(root(), "upload"), 0o777);
  writeFileSync(join(root(), "hello.txt"), "hello over FTP\n");
  mkdirSync(join(dir, "empty"), { mode: 0o755 });
  ftpPort = await freePort();
  const pasvMin = await freeRange(20);
  const conf = join(dir, "vsftpd.conf");
  writeFileSync(
    conf,
    [
      "listen=YES",
      "listen_ipv6=NO",
      "listen_address=127.0.0.1",
      `listen_port=${ftpPort}`,
      "background=NO",
      "anonymous_enable=YES",
      "local_enable=NO",
      "no_anon_password=YES",
      `anon_root=${root()}`,
      "ftp_username=ftp",
      "write_enable=YES",
      "anon_upload_enable=YES",
      "anon_mkdir_write_enable=YES",
      "anon_other_write_enable=YES",
      // Uploads are the ftp user's 0600 files; let anonymous read them back.
      "anon_world_readable_only=NO",
      "pasv_enable=YES",
      "pasv_address=127.0.0.1",
      `pasv_min_port=${pasvMin}`,
      `pasv_max_port=${pasvMin + 19}`,
      "port_enable=YES",
      "connect_from_port_20=NO",
      `secure_chroot_dir=${join(dir, "empty")}`,
      "seccomp_sandbox=NO",
      // The protocol log shows every command vsftpd received (to prove PORT never gets there).
      "xferlog_enable=YES",
      "xferlog_std_format=NO",
      "log_ftp_protocol=YES",
      `vsftpd_log_file=${vsftpdLog()}`,
      "",
    ].join("\n"),
  );
  // Its own process group: vsftpd forks a process per session, all killed together in `after`.
  vsftpd = spawn("vsftpd", [conf], { stdio: ["ignore", "pipe", "pipe"], detached: true });
  vsftpd.stdout?.on("data", (d) => {
    vsftpdOutput += d;
  });
  vsftpd.stderr?.on("data", (d) => {
    vsftpdOutput += d;
  });
  await waitForGreeting(ftpPort, 10_000);
}

async function stopVsftpd(): Promise<void> {
  const child = vsftpd;
  if (!child?.pid || child.exitCode !== null) return;
  const exited = once(child, "exit");
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    child.kill("SIGKILL");
  }
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
}

/** `mtls tunnel KIND ARGS` with --status; resolves with its ports once it says it is listening. */
async function tunnel(kind: "server" | "client", args: string[]) {
  const bg = await startBackground(
    process.execPath,
    [CLI, "tunnel", kind, "--status", "127.0.0.1:0", "--log-level", "debug", ...args],
    { cwd: dir, ready: /mtls: tunnel (server|client) listening on \S+ → \S+.*\n/, timeoutMs: 15_000 },
  );
  running.push(bg);
  const m = /listening on 127\.0\.0\.1:(\d+) → [^\s;]+; status on 127\.0\.0\.1:(\d+)/.exec(bg.output());
  assert.ok(m, bg.output());
  return { bg, port: Number(m[1]), status: Number(m[2]) };
}

function curl(args: string[]) {
  return run("curl", ["--silent", "--show-error", "--max-time", "30", ...args], { timeoutMs: 45_000 });
}

function lftp(script: string) {
  return run(
    "lftp",
    [
      "-e",
      `set ftp:passive-mode on; set net:max-retries 1; set net:timeout 10; set ftp:ssl-allow no; ${script}; bye`,
      "-u",
      "anonymous,",
      `ftp://127.0.0.1:${client.port}`,
    ],
    { cwd: dir, timeoutMs: 60_000 },
  );
}

async function metrics(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) });
  return res.text();
}

function metricValue(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

/** The FTP commands vsftpd received, from its protocol log. */
function vsftpdCommands(): string[] {
  if (!existsSync(vsftpdLog())) return [];
  return [...readFileSync(vsftpdLog(), "utf8").matchAll(/FTP command: Client "[^"]*", "([^"]*)"/g)].map(
    (m) => m[1] as string,
  );
}

/** How many times vsftpd received this command so far. */
const passiveCommands = (verb: string) => vsftpdCommands().filter((c) => c.toUpperCase() === verb).length;

before(async () => {
  await requireTool("curl", ["--version"]);
  await requireTool("lftp", ["--version"]);
  await requireTool("vsftpd", ["-v"]);
  ({ dir, cleanup } = tempDir("mtls-e2e-ftp-"));
  assertOk(await mtls(["init", "--name", "Acme"], { cwd: dir, env: ENV }), "mtls init");
  for (const [profile, name, extra] of [
    ["server", "tunnel", ["--dns", "localhost", "--ip", "127.0.0.1"]],
    ["client", "alice", []],
    ["client", "mallory", []],
  ] as const) {
    assertOk(
      await mtls(["issue", profile, name, "--out", "certs", ...extra], { cwd: dir, env: ENV }),
      `mtls issue ${name}`,
    );
  }
  await startVsftpd();
  // Both certificates pass the policy: what stops mallory's data connection is the token's binding.
  server = await tunnel("server", [
    "--protocol",
    "ftp",
    "--listen",
    "127.0.0.1:0",
    "--target",
    `127.0.0.1:${ftpPort}`,
    ...certFlags("tunnel"),
    "--allow-cn",
    "alice",
    "--allow-cn",
    "mallory",
  ]);
  client = await tunnel("client", [
    "--protocol",
    "ftp",
    "--listen",
    "127.0.0.1:0",
    "--target",
    `127.0.0.1:${server.port}`,
    "--server-name",
    "localhost",
    ...certFlags("alice"),
  ]);
  payload = join(dir, "payload.bin");
  const bytes = randomBytes(FIVE_MB);
  writeFileSync(payload, bytes);
  payloadSha = sha256(bytes);
});

after(async () => {
  for (const bg of running) await bg.stop();
  await stopVsftpd();
  cleanup?.();
});

describe("FTP through mtls tunnels (vsftpd behind, curl and lftp in front)", () => {
  for (const mode of ["EPSV", "PASV"] as const) {
    it(`curl lists, uploads and downloads 5 MB byte for byte (${mode})`, async () => {
      const flags = mode === "PASV" ? ["--disable-epsv"] : [];
      const seen = passiveCommands(mode);
      const url = `ftp://127.0.0.1:${client.port}`;
      const list = await curl([...flags, `${url}/`]);
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, /hello\.txt/);
      assert.match(list.stdout, /upload/);

      const name = `curl-${mode}.bin`;
      const up = await curl([...flags, "-T", payload, `${url}/upload/${name}`]);
      assert.equal(up.code, 0, up.stderr);
      assert.equal(sha256(readFileSync(join(root(), "upload", name))), payloadSha);

      const out = join(dir, `curl-${mode}.out`);
      const down = await curl([...flags, `${url}/upload/${name}`, "-o", out]);
      assert.equal(down.code, 0, down.stderr);
      assert.equal(sha256(readFileSync(out)), payloadSha);

      assert.equal(passiveCommands(mode) - seen, 3, `vsftpd got ${mode} for each transfer`);
    });

    it(`lftp lists, uploads and downloads 5 MB byte for byte (${mode})`, async () => {
      const name = `lftp-${mode}.bin`;
      const out = join(dir, `lftp-${mode}.out`);
      const seen = passiveCommands(mode);
      const res = await lftp(
        `set ftp:prefer-epsv ${mode === "EPSV" ? "yes" : "no"}; ls; cd upload; put ${payload} -o ${name}; get ${name} -o ${out}`,
      );
      assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
      assert.match(res.stdout, /hello\.txt/);
      assert.equal(sha256(readFileSync(join(root(), "upload", name))), payloadSha);
      assert.equal(sha256(readFileSync(out)), payloadSha);
      assert.ok(passiveCommands(mode) - seen >= 3, `vsftpd got ${mode} for each transfer`);
    });
  }

  it("refuses active mode (curl --ftp-port -) with the tunnel's 502; vsftpd never sees PORT or EPRT", async () => {
    const res = await run(
      "curl",
      ["--verbose", "--max-time", "20", "--ftp-port", "-", `ftp://127.0.0.1:${client.port}/`],
      { timeoutMs: 30_000 },
    );
    // 30: CURLE_FTP_PORT_FAILED.
    assert.equal(res.code, 30, res.stderr);
    assert.match(
      res.stderr,
      /< 502 Active mode is not supported through mtls; use passive mode \(PASV\/EPSV\)/,
    );
    assert.match(res.stderr, /> (EPRT|PORT) /);
    const cmds = vsftpdCommands();
    assert.ok(cmds.length > 0, "vsftpd's protocol log is empty");
    assert.deepEqual(
      cmds.filter((c) => /^(PORT|EPRT)\b/i.test(c)),
      [],
    );
  });

  it("refuses a data connection that presents another certificate with a stolen token", async () => {
    const tlsTo = async (who: string): Promise<TLSSocket> => {
      const c = certs(who);
      const s = tlsConnect({
        host: "127.0.0.1",
        port: server.port,
        servername: "localhost",
        ca: readFileSync(c.ca),
        cert: readFileSync(c.cert),
        key: readFileSync(c.key),
      });
      s.on("error", () => undefined);
      await withTimeout(once(s, "secureConnect"), 5000, `TLS as ${who}`);
      return s;
    };
    const firstLine = (s: TLSSocket) =>
      withTimeout(
        new Promise<string>((resolve) => {
          let buf = "";
          const onData = (d: Buffer) => {
            buf += d.toString("latin1");
            const lf = buf.indexOf("\n");
            if (lf >= 0) {
              s.off("data", onData);
              resolve(buf.slice(0, lf).replace(/\r$/, ""));
            }
          };
          s.on("data", onData);
        }),
        5000,
        "preamble answer",
      );
    const sockets: TLSSocket[] = [];
    try {
      // Alice's control connection, as a tunnel client would open it; the token is in the EPSV reply.
      const control = await tlsTo("alice");
      sockets.push(control);
      const r = new FtpReplyReader(control);
      control.write("MTLS-FTP/1 CONTROL\r\n");
      const ack = await r.next();
      assert.equal(ack.text, "MTLS-FTP/1 OK\r\n");
      assert.equal((await r.next()).code, 220);
      assert.equal((await command(control, r, "USER anonymous")).code, 230);
      const epsv = await command(control, r, "EPSV");
      const m = /^229 MTLS-FTP-DATA (\S+) /.exec(epsv.text);
      assert.ok(m, epsv.text);
      const token = m[1] as string;

      // Mallory (allowed by the policy, but not the control connection's certificate) tries it.
      const stolen = await tlsTo("mallory");
      sockets.push(stolen);
      stolen.write(`MTLS-FTP/1 DATA ${token}\r\n`);
      assert.match(await firstLine(stolen), /^MTLS-FTP\/1 NO wrong_certificate /);
      await withTimeout(once(stolen, "close"), 5000, "refused data connection closed");

      // Alice's own data connection with the same token still works, once.
      const data = await tlsTo("alice");
      sockets.push(data);
      data.write(`MTLS-FTP/1 DATA ${token}\r\n`);
      const chunks: Buffer[] = [];
      let answered = false;
      let pending = "";
      data.on("data", (d: Buffer) => {
        if (answered) {
          chunks.push(d);
          return;
        }
        pending += d.toString("latin1");
        const lf = pending.indexOf("\n");
        if (lf >= 0) {
          answered = true;
          assert.equal(pending.slice(0, lf), "MTLS-FTP/1 OK\r");
          if (pending.length > lf + 1) chunks.push(Buffer.from(pending.slice(lf + 1), "latin1"));
        }
      });
      const ended = once(data, "end");
      assert.equal((await command(control, r, "NLST")).code, 150);
      await withTimeout(ended, 10_000, "listing");
      assert.match(Buffer.concat(chunks).toString(), /hello\.txt/);
      assert.equal((await r.next()).code, 226);

      const replay = await tlsTo("alice");
      sockets.push(replay);
      replay.write(`MTLS-FTP/1 DATA ${token}\r\n`);
      assert.match(await firstLine(replay), /^MTLS-FTP\/1 NO token_used /);
    } finally {
      for (const s of sockets) s.destroy();
    }

    // Audited and counted.
    const refused = server.bg
      .output()
      .split("\n")
      .filter((l) => l.includes('"event":"connection"') && l.includes("ftp_wrong_certificate"));
    assert.equal(refused.length, 1, server.bg.output().slice(-3000));
    assert.match(refused[0] as string, /CN=mallory/);
    const text = await metrics(server.status);
    const series = (result: string) =>
      `mtls_tunnel_ftp_data_connections_total{tunnel="127.0.0.1:0",result="${result}"}`;
    assert.equal(metricValue(text, series("wrong_certificate")), 1);
    assert.equal(metricValue(text, series("token_used")), 1);
  });

  it("counts data connections and refused commands at both ends", async () => {
    const s = await metrics(server.status);
    const c = await metrics(client.status);
    const allowed = `mtls_tunnel_ftp_data_connections_total{tunnel="127.0.0.1:0",result="allowed"}`;
    // curl and lftp: list, upload, download in each mode; plus the hand-made data connection.
    assert.ok(metricValue(s, allowed) >= 13, s);
    assert.ok(metricValue(c, allowed) >= 12, c);
    assert.ok(
      metricValue(s, `mtls_tunnel_ftp_passive_replies_total{tunnel="127.0.0.1:0",result="rewritten"}`) >= 13,
    );
    const refused = (cmd: string) =>
      metricValue(s, `mtls_tunnel_ftp_commands_refused_total{tunnel="127.0.0.1:0",command="${cmd}"}`);
    assert.ok(refused("EPRT") + refused("PORT") >= 1);
    const dataAudits = client.bg
      .output()
      .split("\n")
      .filter((l) => l.includes('"event":"connection"') && l.includes('"channel":"data"'));
    assert.ok(dataAudits.length >= 12);
  });
});
