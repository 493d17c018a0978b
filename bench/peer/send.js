#!/usr/bin/env node
// Peer benchmark: @parse/node-apn sends the same notifications as varseld
// (same tokens, body, apns-* headers and provider-token key) to the same
// varsel-sandbox, over the same number of HTTP/2 connections, with at most
// `window` requests in flight (varseld's in-flight window).
//
//   NODE_EXTRA_CA_CERTS=ca.pem node bench/peer/send.js CONFIG.json
//
// CONFIG: {"host","port","keyFile","keyId","teamId","topic","tokensFile",
//          "count","connections","window","payload":{...},"priority",
//          "expiration","pushType","collapseId","timeoutS"}
// Prints one JSON line: counts, seconds from the first send to the last
// answer, rate, CPU seconds and peak RSS of this process, and the number of
// answers per 250 ms bin. node-apn reads no Redis and writes no receipts:
// it is only the provider side of what varseld does.
'use strict';

const fs = require('fs');
const crypto = require('crypto');
const apn = require('@parse/node-apn');

async function main() {
  const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const tokens = fs.readFileSync(cfg.tokensFile, 'utf8').split('\n').filter(Boolean);
  const count = cfg.count;
  const window = cfg.window;
  const options = {
    token: { key: cfg.keyFile, keyId: cfg.keyId, teamId: cfg.teamId },
    address: cfg.host,
    port: cfg.port,
    production: true,
    requestTimeout: 30000,
    connectionRetryLimit: 3,
  };
  const provider = cfg.connections > 1
    ? new apn.MultiProvider({ ...options, clientCount: cfg.connections })
    : new apn.Provider(options);

  const bins = [];
  let sent = 0, failed = 0, next = 0, done = 0, firstError = null;
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  const deadline = Date.now() + (cfg.timeoutS || 600) * 1000;

  await new Promise((resolve, reject) => {
    let inflight = 0;
    const pump = () => {
      while (inflight < window && next < count) {
        if (Date.now() > deadline) {
          reject(new Error(`timed out with ${done} of ${count} answered`));
          return;
        }
        const token = tokens[next % tokens.length];
        next++;
        inflight++;
        // One Notification per device, as varseld builds one request per
        // device: own apns-id, same body and headers as varseld's.
        const note = new apn.Notification();
        note.rawPayload = cfg.payload;
        note.topic = cfg.topic;
        note.priority = cfg.priority;
        note.expiry = cfg.expiration;
        note.pushType = cfg.pushType;
        if (cfg.collapseId) note.collapseId = cfg.collapseId;
        note.id = crypto.randomUUID();
        provider.send(note, token).then(res => {
          sent += res.sent.length;
          failed += res.failed.length;
          if (res.failed.length && !firstError) {
            const f = res.failed[0];
            firstError = f.response ? JSON.stringify(f.response) + ' ' + f.status
                                    : String(f.error || f.status);
          }
        }, err => {
          failed++;
          if (!firstError) firstError = String(err && (err.error || err));
        }).finally(() => {
          inflight--;
          done++;
          const ms = Number((process.hrtime.bigint() - t0) / 1000000n);
          const b = Math.floor(ms / 250);
          while (bins.length <= b) bins.push(0);
          bins[b]++;
          if (done === count) resolve();
          else pump();
        });
      }
    };
    pump();
  });

  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const ru = process.resourceUsage();
  await provider.shutdown();
  process.stdout.write(JSON.stringify({
    count, sent, failed, first_error: firstError, seconds,
    rate_per_s: count / seconds,
    cpu_user_s: cpu.user / 1e6, cpu_sys_s: cpu.system / 1e6,
    cpu_s: (cpu.user + cpu.system) / 1e6,
    max_rss_kb: ru.maxRSS,
    bin_ms: 250, answers_per_bin: bins,
    node: process.version,
    node_apn: require('@parse/node-apn/package.json').version,
  }) + '\n');
  // Sessions closed; do not wait for idle timers.
  process.exit(0);
}

main().catch(err => {
  process.stderr.write(`send.js: ${err && err.stack || err}\n`);
  process.exit(1);
});
