#!/usr/bin/env node
// A closed-loop HTTPS load generator for bench/gateway.ts, run as its own process: CONCURRENCY
// keep-alive HTTP/1.1 connections over tls.connect, each presenting a client certificate (which wrk
// cannot), each sending the next GET as soon as the previous answer has been read whole, for SECONDS
// after WARMUP seconds. Requests are pre-built and answers go through a minimal parser (status line,
// Content-Length or chunked, Connection: close), so the client costs as little as it can of a CPU it
// may share with what it measures. A connection the server closes is opened again (a full handshake,
// counted). Only 127.0.0.1 is accepted. Prints one JSON line: answers, answers/s, p50/p99 latency
// (ms), body bytes/s, reconnects, its own CPU use (cores).
//
//   node bench/https-load.mjs URL CONCURRENCY SECONDS WARMUP SPEC.json
//   SPEC.json: { "cert": "client.crt", "key": "client.key", "ca": "ca.crt", "servername": "localhost",
//                "expectStatus": 200, "expectBytes": 1048576 }
import { readFileSync } from "node:fs";
import tls from "node:tls";

const [url, concArg, secondsArg, warmupArg, specFile] = process.argv.slice(2);
const target = new URL(url);
if (target.hostname !== "127.0.0.1") throw new Error("https-load only targets 127.0.0.1");
if (target.protocol !== "https:") throw new Error("https-load speaks https:// only");
const concurrency = Number(concArg);
const seconds = Number(secondsArg);
const warmup = Number(warmupArg);
const spec = JSON.parse(readFileSync(specFile, "utf8"));
const port = Number(target.port || 443);
const expectStatus = spec.expectStatus ?? 200;
const expectBytes = spec.expectBytes;
const secureContext = tls.createSecureContext({
  cert: readFileSync(spec.cert),
  key: readFileSync(spec.key),
  ca: readFileSync(spec.ca),
  minVersion: "TLSv1.3",
});
const request = Buffer.from(
  `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${spec.servername ?? "localhost"}\r\nUser-Agent: mtls-bench\r\nAccept: */*\r\n\r\n`,
  "latin1",
);
const CRLF2 = Buffer.from("\r\n\r\n");
const CRLF = Buffer.from("\r\n");

let measuring = false;
let stop = false;
let ok = 0;
let bad = 0;
let errors = 0;
let bytes = 0;
let connects = 0;
let firstError;
let sent = 0;
const latencies = [];

/**
 * One connection: parses answers as they stream in and calls `done(status, bodyBytes, close)` per
 * answer. Bodies are counted, not kept (except chunked framing, which is parsed in place).
 */
function open(done, fail) {
  const socket = tls.connect({
    host: target.hostname,
    port,
    servername: spec.servername ?? "localhost",
    secureContext,
    ALPNProtocols: ["http/1.1"],
  });
  socket.setNoDelay(true);
  let head = null; // Buffer while reading a head, null in a body
  let status = 0;
  let remaining = 0; // body bytes left (length-framed)
  let chunked = false;
  let chunkBuf = null; // pending bytes of a chunked body
  let close = false;
  let body = 0;
  let closed = false;
  let ready = false;
  const finish = () => {
    const s = status;
    const n = body;
    const c = close;
    head = Buffer.alloc(0);
    chunked = false;
    chunkBuf = null;
    body = 0;
    done(s, n, c);
  };
  head = Buffer.alloc(0);
  const feed = (data) => {
    while (data.length) {
      if (head !== null) {
        const buf = head.length ? Buffer.concat([head, data]) : data;
        const end = buf.indexOf(CRLF2);
        if (end < 0) {
          head = buf;
          return;
        }
        const text = buf.subarray(0, end).toString("latin1");
        status = Number(text.slice(9, 12));
        const lower = text.toLowerCase();
        const cl = /\r\ncontent-length:\s*(\d+)/.exec(lower);
        chunked = /\r\ntransfer-encoding:[^\r]*chunked/.test(lower);
        close = /\r\nconnection:\s*close/.test(lower);
        remaining = cl ? Number(cl[1]) : 0;
        head = null;
        data = buf.subarray(end + 4);
        if (!chunked && remaining === 0) finish();
        continue;
      }
      if (!chunked) {
        const take = Math.min(remaining, data.length);
        remaining -= take;
        body += take;
        data = data.subarray(take);
        if (remaining === 0) finish();
        continue;
      }
      // chunked: SIZE CRLF DATA CRLF ... 0 CRLF CRLF
      chunkBuf = chunkBuf?.length ? Buffer.concat([chunkBuf, data]) : data;
      data = Buffer.alloc(0);
      for (;;) {
        const eol = chunkBuf.indexOf(CRLF);
        if (eol < 0) break;
        const size = Number.parseInt(chunkBuf.subarray(0, eol).toString("latin1"), 16);
        if (size === 0) {
          if (chunkBuf.length < eol + 4) break;
          data = chunkBuf.subarray(eol + 4);
          finish();
          break;
        }
        if (chunkBuf.length < eol + 2 + size + 2) break;
        body += size;
        chunkBuf = chunkBuf.subarray(eol + 2 + size + 2);
      }
      if (chunked) return;
    }
  };
  socket.on("data", feed);
  socket.on("error", (err) => {
    if (!closed) fail(err);
    closed = true;
  });
  socket.on("close", () => {
    if (!closed) fail(new Error("connection closed before the answer"));
    closed = true;
  });
  return {
    socket,
    whenReady: new Promise((resolve, reject) => {
      socket.once("secureConnect", () => {
        ready = true;
        resolve();
      });
      socket.once("error", (err) => {
        if (!ready) reject(err);
      });
    }),
    get closed() {
      return closed;
    },
    shut() {
      closed = true;
      socket.destroy();
    },
  };
}

async function loop() {
  let conn;
  let waiting;
  const onDone = (status, n, close) => {
    const w = waiting;
    waiting = undefined;
    w?.resolve({ status, n, close });
  };
  const onFail = (err) => {
    const w = waiting;
    waiting = undefined;
    if (w) w.reject(err);
  };
  while (!stop) {
    const t0 = performance.now();
    try {
      if (!conn || conn.closed) {
        conn = open(onDone, onFail);
        if (measuring) connects++;
        await conn.whenReady;
      }
      const answer = await new Promise((resolve, reject) => {
        waiting = { resolve, reject };
        sent++;
        conn.socket.write(request);
      });
      const good = answer.status === expectStatus && (expectBytes === undefined || answer.n === expectBytes);
      if (!good) firstError ??= `HTTP ${answer.status}, ${answer.n} body bytes`;
      if (measuring) {
        if (good) ok++;
        else bad++;
        bytes += answer.n;
        latencies.push(performance.now() - t0);
      }
      if (answer.close) conn.shut();
    } catch (err) {
      if (measuring) errors++;
      firstError ??= err.message;
      conn?.shut();
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  conn?.shut();
}

const loops = Array.from({ length: concurrency }, loop);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
await sleep(warmup * 1000);
const cpu0 = process.cpuUsage();
measuring = true;
const t0 = performance.now();
await sleep(seconds * 1000);
measuring = false;
const elapsed = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
stop = true;
await Promise.race([Promise.all(loops), sleep(5000)]);
latencies.sort((a, b) => a - b);
const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0;
process.stdout.write(
  `${JSON.stringify({
    ok,
    bad,
    errors,
    seconds: elapsed,
    perSec: ok / elapsed,
    bytesPerSec: bytes / elapsed,
    p50: pct(0.5),
    p99: pct(0.99),
    connects,
    loadCpu: (cpu.user + cpu.system) / 1e6 / elapsed,
    all: sent,
    firstError,
  })}\n`,
);
process.exit(0);
