#!/usr/bin/env node
// A closed-loop HTTPS POST load generator, run as its own process (so that it can be pinned apart
// from the servers it measures): CONCURRENCY loops, each POSTing the next body as soon as its
// previous answer arrived, over keep-alive connections, the loops spread round-robin over one or
// more URLs (several CA nodes behind no load balancer). Each body is sent at most once when "once"
// is set (single-use enrollment tokens); the run then ends early when they run out.
//
// It prints one JSON line per event on stdout, so the parent can read server CPU time exactly over
// the timed window: {"event":"start"} when the warm-up is over, {"event":"stop"} when the window
// closes, then {"event":"result", ...} with counts and the sorted latencies (ms) of the window.
// Only 127.0.0.1 is accepted.
//
//   node bench/lib/post-load.mjs SPEC.json
//   SPEC.json: { "urls": ["https://127.0.0.1:P/v1/enroll", ...], "concurrency": 16, "seconds": 5,
//                "warmup": 1, "contentType": "application/json", "bodies": ["base64", ...],
//                "once": true, "expectStatus": 201, "caPem": "PEM",
//                "cert": "PEM", "key": "PEM" (optional client certificate) }
import { readFileSync } from "node:fs";
import https from "node:https";

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const urls = spec.urls.map((u) => new URL(u));
for (const u of urls) {
  if (u.hostname !== "127.0.0.1" || u.protocol !== "https:")
    throw new Error(`post-load only targets https://127.0.0.1 (${u})`);
}
const bodies = spec.bodies.map((b) => Buffer.from(b, "base64"));
const expectStatus = spec.expectStatus ?? 200;
const say = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

// One keep-alive agent per URL, as many sockets as loops on it: every loop keeps its connection.
const agents = urls.map(
  (_, i) =>
    new https.Agent({
      keepAlive: true,
      maxSockets: Math.ceil((spec.concurrency - i) / urls.length),
      ca: spec.caPem,
      ...(spec.cert ? { cert: spec.cert, key: spec.key } : {}),
    }),
);

let measuring = false;
let stop = false;
let next = 0;
let ok = 0;
let bad = 0;
let errors = 0;
let firstError;
const latencies = [];
const perUrl = urls.map(() => 0);

function post(u, agent, body) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const done = (status, text) => {
      const good = status === expectStatus;
      if (!good) firstError ??= status ? `HTTP ${status}: ${text.slice(0, 200)}` : text;
      if (measuring) {
        if (good) ok++;
        else if (status) bad++;
        else errors++;
        latencies.push(performance.now() - t0);
      }
      resolve(good);
    };
    const req = https.request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method: "POST",
        agent,
        headers: { "content-type": spec.contentType, "content-length": body.length },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => done(res.statusCode, Buffer.concat(chunks).toString()));
        res.on("error", (err) => done(0, err.message));
      },
    );
    req.on("error", (err) => done(0, err.message));
    req.end(body);
  });
}

let exhausted;
const ran = new Promise((r) => {
  exhausted = r;
});

async function loop(i) {
  const u = urls[i % urls.length];
  const agent = agents[i % urls.length];
  while (!stop) {
    if (spec.once && next >= bodies.length) return exhausted();
    const body = bodies[next++ % bodies.length];
    const good = await post(u, agent, body);
    if (good && measuring) perUrl[i % urls.length]++;
  }
}

const loops = Array.from({ length: spec.concurrency }, (_, i) => loop(i));
const wait = (ms) => Promise.race([new Promise((r) => setTimeout(r, ms)), ran]);
await wait(spec.warmup * 1000);
const cpu0 = process.cpuUsage();
say({ event: "start" });
measuring = true;
const t0 = performance.now();
await wait(spec.seconds * 1000);
measuring = false;
const elapsed = (performance.now() - t0) / 1000;
say({ event: "stop" });
const cpu = process.cpuUsage(cpu0);
stop = true;
await Promise.all(loops);
for (const a of agents) a.destroy();
latencies.sort((a, b) => a - b);
say({
  event: "result",
  ok,
  bad,
  errors,
  seconds: elapsed,
  perSec: ok / elapsed,
  perUrl,
  latencies: latencies.map((l) => Math.round(l * 100) / 100),
  loadCores: (cpu.user + cpu.system) / 1e6 / elapsed,
  sent: next,
  exhausted: spec.once && next >= bodies.length,
  firstError,
});
