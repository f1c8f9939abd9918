#!/usr/bin/env node
// A small closed-loop HTTP load generator for bench/ca.ts, run as its own process: CONCURRENCY
// loops, each POSTing the next body as soon as its previous answer arrived, over keep-alive
// connections (a server that closes after each answer, as `openssl ocsp -port` does, is reconnected
// to), for SECONDS after a warm-up. Only 127.0.0.1 URLs are accepted. Prints one JSON line: counts,
// rate and latency percentiles, and its own CPU use.
//
// Plain http:// goes over raw sockets with pre-built requests and a minimal response parser: on a
// 2-core machine the client shares the CPU with the server it measures, and node:http's client
// costs more per request than a fast server does. https:// uses node:https.
//
//   node bench/http-load.mjs URL CONCURRENCY SECONDS WARMUP BODIES.json
//   BODIES.json: { "contentType": "...", "bodies": ["base64", ...], "expectPrefix": "hex",
//                  "expectStatus": 200, "once": false, "caPem": "PEM for https:// URLs" }
// With "once", each body is sent at most once (single-use tokens) and the run ends when they run out.
import { readFileSync } from "node:fs";
import https from "node:https";
import { connect } from "node:net";

const [url, concArg, secondsArg, warmupArg, bodiesFile] = process.argv.slice(2);
const target = new URL(url);
if (target.hostname !== "127.0.0.1") throw new Error("http-load only targets 127.0.0.1");
const concurrency = Number(concArg);
const seconds = Number(secondsArg);
const warmup = Number(warmupArg);
const spec = JSON.parse(readFileSync(bodiesFile, "utf8"));
const bodies = spec.bodies.map((b) => Buffer.from(b, "base64"));
const expect = spec.expectPrefix ? Buffer.from(spec.expectPrefix, "hex") : undefined;
const expectStatus = spec.expectStatus ?? 200;
const tls = target.protocol === "https:";
const port = Number(target.port || (tls ? 443 : 80));

let measuring = false;
let stop = false;
let ok = 0;
let bad = 0;
let errors = 0;
let next = 0;
const latencies = [];
let firstError;

function record(t0, status, answer) {
  const good = status === expectStatus && (!expect || answer.subarray(0, expect.length).equals(expect));
  if (!good) firstError ??= `HTTP ${status}: ${answer.subarray(0, 200).toString()}`;
  if (measuring) {
    if (good) ok++;
    else bad++;
    latencies.push(performance.now() - t0);
  }
}

function failed(err) {
  if (measuring) errors++;
  firstError ??= err.message;
}

// ------------------------------------------------------------------ plain HTTP over raw sockets

const requests = tls
  ? []
  : bodies.map((body) =>
      Buffer.concat([
        Buffer.from(
          `POST ${target.pathname} HTTP/1.1\r\nHost: ${target.host}\r\nContent-Type: ${spec.contentType}\r\nContent-Length: ${body.length}\r\nConnection: keep-alive\r\n\r\n`,
        ),
        body,
      ]),
    );
const CRLF2 = Buffer.from("\r\n\r\n");

/** One connection's loop: send, read one whole answer, repeat; reconnect when the server closes. */
async function rawLoop() {
  let sock;
  let buf = Buffer.alloc(0);
  let waiting; // { resolve, reject } of the answer in flight
  let closed = true;
  const open = () =>
    new Promise((resolve, reject) => {
      sock = connect(port, target.hostname);
      sock.setNoDelay(true);
      closed = false;
      buf = Buffer.alloc(0);
      sock.once("connect", resolve);
      sock.on("error", (err) => {
        reject(err);
        waiting?.reject(err);
        waiting = undefined;
      });
      sock.on("close", () => {
        closed = true;
        waiting?.reject(new Error("connection closed before the answer"));
        waiting = undefined;
      });
      sock.on("data", (chunk) => {
        buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
        parse();
      });
    });
  const parse = () => {
    if (!waiting) return;
    const end = buf.indexOf(CRLF2);
    if (end < 0) return;
    const head = buf.subarray(0, end).toString("latin1");
    const m = /content-length:\s*(\d+)/i.exec(head);
    const len = m ? Number(m[1]) : 0;
    if (buf.length < end + 4 + len) return;
    const status = Number(head.slice(9, 12));
    const body = buf.subarray(end + 4, end + 4 + len);
    const keepAlive = head.startsWith("HTTP/1.1")
      ? !/connection:\s*close/i.test(head)
      : /keep-alive/i.test(head);
    buf = buf.subarray(end + 4 + len);
    const w = waiting;
    waiting = undefined;
    w.resolve({ status, body, keepAlive });
  };
  while (!stop) {
    if (spec.once && next >= requests.length) return exhausted();
    const i = next++ % requests.length;
    const t0 = performance.now();
    try {
      if (closed) await open();
      const answer = await new Promise((resolve, reject) => {
        waiting = { resolve, reject };
        sock.write(requests[i]);
      });
      record(t0, answer.status, answer.body);
      if (!answer.keepAlive) {
        sock.destroy();
        closed = true;
      }
    } catch (err) {
      failed(err);
      sock?.destroy();
      closed = true;
    }
  }
  sock?.destroy();
}

// ------------------------------------------------------------------ HTTPS through node:https

const agent = tls ? new https.Agent({ keepAlive: true, maxSockets: concurrency, ca: spec.caPem }) : undefined;

function httpsOnce(body) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const req = https.request(
      {
        host: target.hostname,
        port,
        path: target.pathname,
        method: "POST",
        agent,
        headers: { "content-type": spec.contentType, "content-length": body.length },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          record(t0, res.statusCode, Buffer.concat(chunks));
          resolve();
        });
        res.on("error", (err) => {
          failed(err);
          resolve();
        });
      },
    );
    req.on("error", (err) => {
      failed(err);
      resolve();
    });
    req.end(body);
  });
}

async function httpsLoop() {
  while (!stop) {
    if (spec.once && next >= bodies.length) return exhausted();
    await httpsOnce(bodies[next++ % bodies.length]);
  }
}

// ------------------------------------------------------------------ the run

let exhausted;
const ran = new Promise((r) => {
  exhausted = r;
});
const loops = Array.from({ length: concurrency }, tls ? httpsLoop : rawLoop);
const sleep = (ms) => Promise.race([new Promise((r) => setTimeout(r, ms)), ran]);
await sleep(warmup * 1000);
const cpu0 = process.cpuUsage();
measuring = true;
const t0 = performance.now();
await sleep(seconds * 1000);
measuring = false;
const elapsed = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
stop = true;
await Promise.all(loops);
agent?.destroy();
latencies.sort((a, b) => a - b);
const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0;
process.stdout.write(
  `${JSON.stringify({
    ok,
    bad,
    errors,
    seconds: elapsed,
    perSec: ok / elapsed,
    p50: pct(0.5),
    p99: pct(0.99),
    loadCpu: (cpu.user + cpu.system) / 1e6 / elapsed,
    all: next,
    firstError,
  })}\n`,
);
