/**
 * Helpers for the end-to-end tests that put real software we did not write behind `mtls tunnel`
 * (tunnel-vnc, tunnel-webdav, tunnel-http, tunnel-refusals): a CA per test file made by the built
 * CLI, tunnels started from it, /metrics and audit lines read back, and peers (Xvnc, nginx, rclone)
 * started as children on 127.0.0.1 and always stopped. Every wait is bounded.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { assertOk, type Background, CLI, mtls, type RunResult, run, startBackground } from "./helpers.js";

export const PASSPHRASE_ENV = { MTLS_PASSPHRASE: "e2e-peers-passphrase" };

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 25 ms for at most `ms`; throws naming `what` (and `show()`) when it never holds. */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  ms: number,
  what: string,
  show: () => string = () => "",
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}\n${show()}`);
    await sleep(25);
  }
}

export const sha256 = (data: Buffer | string): string => createHash("sha256").update(data).digest("hex");

/** A CA made by `mtls init` in `dir` (state in DIR/.mtls, issued files in DIR/certs). */
export class TestCa {
  constructor(readonly dir: string) {}

  get state(): string {
    return join(this.dir, ".mtls");
  }

  static async init(dir: string, extra: string[] = []): Promise<TestCa> {
    assertOk(
      await mtls(["init", "--name", "Acme E2E", ...extra], { cwd: dir, env: PASSPHRASE_ENV }),
      "mtls init",
    );
    return new TestCa(dir);
  }

  /** `mtls issue PROFILE NAME --out certs ARGS`; returns the JSON the command printed. */
  async issue(
    profile: "server" | "client" | "peer",
    name: string,
    extra: string[] = [],
  ): Promise<{ serial: string; notAfter: string }> {
    const res = assertOk(
      await mtls(["issue", profile, name, "--out", "certs", "--json", ...extra], {
        cwd: this.dir,
        env: PASSPHRASE_ENV,
      }),
      `mtls issue ${profile} ${name}`,
    );
    const parsed = JSON.parse(res.stdout) as { serial: string; notAfter: string };
    return { serial: parsed.serial, notAfter: parsed.notAfter };
  }

  async revoke(name: string): Promise<RunResult> {
    return assertOk(
      await mtls(["revoke", name], { cwd: this.dir, env: PASSPHRASE_ENV }),
      `mtls revoke ${name}`,
    );
  }

  files(name: string): { cert: string; key: string; ca: string } {
    return {
      cert: join(this.dir, "certs", `${name}.crt`),
      key: join(this.dir, "certs", `${name}.key`),
      ca: join(this.dir, "certs", "ca.crt"),
    };
  }

  /** --cert/--key/--ca flags for a tunnel. */
  flags(name: string): string[] {
    const f = this.files(name);
    return ["--cert", f.cert, "--key", f.key, "--ca", f.ca];
  }

  /** curl flags presenting NAME's certificate and trusting this CA. */
  curlFlags(name: string): string[] {
    const f = this.files(name);
    return ["--cert", f.cert, "--key", f.key, "--cacert", f.ca];
  }
}

export interface Tunnel {
  bg: Background;
  port: number;
  /** The /metrics port, when started with --status. */
  status?: number;
}

/** `mtls tunnel KIND ARGS` (listening on 127.0.0.1:0), resolved once its "listening" line is out. */
export async function startTunnel(
  kind: "server" | "client",
  args: string[],
  cwd: string,
  running: { stop(): Promise<void> }[],
): Promise<Tunnel> {
  const bg = await startBackground(process.execPath, [CLI, "tunnel", kind, ...args], {
    cwd,
    ready: /mtls: tunnel (server|client) listening on \S+ → \S+.*\n/,
    timeoutMs: 15_000,
  });
  // SIGKILL: a tunnel's SIGTERM drains open connections for up to --shutdown-timeout.
  running.push({ stop: () => stopChild(bg.child, 0, "SIGKILL") });
  const m = /listening on 127\.0\.0\.1:(\d+) → [^\s;]+(?:; status on 127\.0\.0\.1:(\d+))?/.exec(bg.output());
  assert.ok(m, bg.output());
  return { bg, port: Number(m[1]), ...(m[2] ? { status: Number(m[2]) } : {}) };
}

/** A server tunnel on 127.0.0.1:0 with /metrics on 127.0.0.1:0, in front of `target`. */
export function startServerTunnel(
  ca: TestCa,
  target: string,
  extra: string[],
  running: { stop(): Promise<void> }[],
  cert = "tunnel",
): Promise<Tunnel> {
  return startTunnel(
    "server",
    ["--listen", "127.0.0.1:0", "--target", target, ...ca.flags(cert), "--status", "127.0.0.1:0", ...extra],
    ca.dir,
    running,
  );
}

/** A client tunnel on 127.0.0.1:0 carrying plain TCP to the server tunnel as `name`. */
export function startClientTunnel(
  ca: TestCa,
  server: Tunnel,
  name: string,
  running: { stop(): Promise<void> }[],
): Promise<Tunnel> {
  return startTunnel(
    "client",
    [
      "--listen",
      "127.0.0.1:0",
      "--target",
      `127.0.0.1:${server.port}`,
      "--server-name",
      "localhost",
      ...ca.flags(name),
    ],
    ca.dir,
    running,
  );
}

/** curl with a deadline; never throws on a non-zero exit. */
export function curl(args: string[], maxTimeS = 10): Promise<RunResult> {
  return run("curl", ["-sS", "--max-time", String(maxTimeS), ...args], { timeoutMs: (maxTimeS + 10) * 1000 });
}

/** The tunnel label of a server listening on 127.0.0.1:0 (the listen flag, as given). */
export const TUNNEL_LABEL = `tunnel="127.0.0.1:0"`;

/** GET /metrics of a tunnel's status server. */
export async function metricsOf(t: Tunnel): Promise<string> {
  assert.ok(t.status, "the tunnel was started without --status");
  const res = await curl([`http://127.0.0.1:${t.status}/metrics`]);
  assert.equal(res.code, 0, res.stderr);
  return res.stdout;
}

/** A series' value in a Prometheus text page (0 when absent). */
export function metricValue(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

export const failureSeries = (reason: string): string =>
  `mtls_tunnel_handshake_failures_total{${TUNNEL_LABEL},reason="${reason}"}`;

export async function failures(t: Tunnel, reason: string): Promise<number> {
  return metricValue(await metricsOf(t), failureSeries(reason));
}

export interface AuditLine {
  event: string;
  allowed: boolean;
  reason?: string;
  detail?: string;
  identity?: { subject: string; serial: string; sans: string[] };
  bytesIn?: number;
  bytesOut?: number;
  [k: string]: unknown;
}

/** The `event: "connection"` audit lines a tunnel has written to stderr so far. */
export function auditLines(t: Tunnel): AuditLine[] {
  return t.bg
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => {
      try {
        return JSON.parse(l) as AuditLine;
      } catch {
        return undefined;
      }
    })
    .filter((l): l is AuditLine => l?.event === "connection");
}

/** Waits (bounded) for an audit line matching `pred` beyond the first `after` lines and returns it. */
export async function waitForAudit(
  t: Tunnel,
  pred: (l: AuditLine) => boolean,
  what: string,
  after = 0,
  ms = 5_000,
): Promise<AuditLine> {
  let hit: AuditLine | undefined;
  await waitFor(
    () => {
      hit = auditLines(t).slice(after).find(pred);
      return hit !== undefined;
    },
    ms,
    `audit line: ${what}`,
    () => t.bg.output(),
  );
  return hit as AuditLine;
}

/**
 * Stops a child: `signal` (SIGTERM by default: Xvnc then removes its /tmp/.X*-lock and socket),
 * SIGKILL after `graceMs`. Resolves when it is gone, or at most graceMs + 5 s; leaves no timer
 * behind (a pending timer would keep the test process alive).
 */
export async function stopChild(
  child: ChildProcess,
  graceMs = 3_000,
  signal: NodeJS.Signals = "SIGTERM",
): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  let kill: NodeJS.Timeout | undefined;
  let giveUp: NodeJS.Timeout | undefined;
  const gone = new Promise<void>((r) => child.once("close", () => r()));
  child.kill(signal);
  if (signal !== "SIGKILL") kill = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await Promise.race([gone, new Promise<void>((r) => (giveUp = setTimeout(r, graceMs + 5_000)))]);
  clearTimeout(kill);
  clearTimeout(giveUp);
}

/** A child started by one of the peer helpers: its output and a gentle stop. */
export interface Peer {
  child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

/**
 * TigerVNC's Xvnc with no authentication (the tunnel is the authentication), RFB on
 * 127.0.0.1:`port` only, X itself on no TCP port (`-nolisten tcp`); `-displayfd` lets Xvnc pick a
 * free display number itself, so parallel runs and a desktop's :0 never collide.
 */
export function startXvnc(port: number, cwd: string): Promise<Peer & { display: number; port: number }> {
  const child = spawn(
    "Xvnc",
    [
      "-displayfd",
      "3",
      "-rfbport",
      String(port),
      // -interface only: -localhost would bind [::1] as well (checked with ss on TigerVNC 1.12).
      "-interface",
      "127.0.0.1",
      "-nolisten",
      "tcp",
      "-SecurityTypes",
      "None",
      "-geometry",
      "320x240",
      "-depth",
      "24",
    ],
    { cwd, stdio: ["ignore", "pipe", "pipe", "pipe"] },
  );
  let output = "";
  let displayText = "";
  child.stdout?.on("data", (d) => {
    output += d;
  });
  child.stderr?.on("data", (d) => {
    output += d;
  });
  (child.stdio[3] as NodeJS.ReadableStream | null)?.on("data", (d) => {
    displayText += d;
  });
  const peer = { child, output: () => output, stop: () => stopChild(child) };
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (err: Error) => {
      settled = true;
      void peer.stop();
      reject(err);
    };
    child.once("error", fail);
    child.once("close", (code) => fail(new Error(`Xvnc exited (${code}) before it was ready:\n${output}`)));
    waitFor(
      () =>
        settled ||
        (/\d+\n/.test(displayText) &&
          new RegExp(
            `Listening for VNC connections on 127\\.0\\.0\\.1 interface\\(s\\), port\\s+${port}\\b`,
          ).test(output)),
      10_000,
      "Xvnc to listen",
      () => output,
    ).then(() => settled || resolve({ ...peer, display: Number.parseInt(displayText, 10), port }), fail);
  });
}

/**
 * nginx (nginx-light) serving `root` on 127.0.0.1:`port`, as a child in the foreground: one
 * process (`master_process off`, so it never switches user and reads the 0700 temp dir), every
 * path inside `prefix`, errors on stderr, no access log.
 */
export async function startNginx(prefix: string, root: string, port: number): Promise<Peer> {
  mkdirSync(join(prefix, "tmp"), { recursive: true });
  const conf = join(prefix, "nginx.conf");
  writeFileSync(
    conf,
    `worker_processes 1;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${join(prefix, "tmp", "body")};
  proxy_temp_path ${join(prefix, "tmp", "proxy")};
  fastcgi_temp_path ${join(prefix, "tmp", "fastcgi")};
  uwsgi_temp_path ${join(prefix, "tmp", "uwsgi")};
  scgi_temp_path ${join(prefix, "tmp", "scgi")};
  types { text/plain txt; application/octet-stream bin; }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${port};
    root ${root};
  }
}
`,
  );
  const bg = await startBackground(
    "nginx",
    [
      "-e",
      "stderr",
      "-p",
      `${prefix}/`,
      "-c",
      conf,
      "-g",
      `daemon off; master_process off; pid ${join(prefix, "nginx.pid")}; error_log stderr notice;`,
    ],
    { cwd: prefix, ready: /nginx\/\d/, timeoutMs: 10_000 },
  );
  await waitForPort(port, 5_000, "nginx", bg.output);
  return { child: bg.child, output: bg.output, stop: () => stopChild(bg.child) };
}

/** `rclone serve webdav DIR --addr 127.0.0.1:PORT`, offline, with no config file. */
export async function startRcloneWebdav(dir: string, port: number, cwd: string): Promise<Peer> {
  const bg = await startBackground(
    "rclone",
    ["--config", "/dev/null", "serve", "webdav", dir, "--addr", `127.0.0.1:${port}`],
    { cwd, ready: /WebDav Server started on/, timeoutMs: 15_000 },
  );
  return { child: bg.child, output: bg.output, stop: () => stopChild(bg.child) };
}

/** Waits until 127.0.0.1:`port` accepts a TCP connection. */
export async function waitForPort(
  port: number,
  ms: number,
  what: string,
  show?: () => string,
): Promise<void> {
  await waitFor(
    () =>
      new Promise<boolean>((resolve) => {
        const s = connect(port, "127.0.0.1");
        s.once("connect", () => {
          s.destroy();
          resolve(true);
        });
        s.once("error", () => resolve(false));
      }),
    ms,
    `${what} on 127.0.0.1:${port}`,
    show,
  );
}

/** True when the file starts with the JPEG SOI marker and a following marker (FF D8 FF). */
export function isJpeg(path: string): boolean {
  const b = readFileSync(path);
  return b.length > 100 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;
}
