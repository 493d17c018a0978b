'use strict';
/*
 * Cross-check of varsel-sandbox's FCM and OAuth fakes against Google's own
 * Node SDK, firebase-admin (not written by us). Run by
 * tests/integration/test_firebase_admin.py as
 *
 *   NODE_EXTRA_CA_CERTS=ca.pem VARSEL_SANDBOX_PORT=PORT \
 *     node --require ./redirect.js send.js SA.json VALID_TOKEN DEAD_TOKEN
 *
 * It initializes an app with the generated service account (so the SDK
 * signs its own RS256 assertion and fetches an access token from the
 * sandbox's /token) and sends:
 *   (a) a message to VALID_TOKEN with send()           → a message name
 *   (b) the same to DEAD_TOKEN (listed unregistered)   → messaging/registration-token-not-registered
 *   (c) a dry run (validate_only) to VALID_TOKEN       → projects/P/messages/fake_message_id
 *   (d) sendEach([VALID, DEAD]) (HTTP/2 in firebase-admin 13) → one success, one not-registered
 * Prints one JSON line with every outcome and exits 0 when all four are
 * as expected, 1 otherwise (the line says which failed).
 */
const fs = require('fs');
const path = require('path');
const { initializeApp, cert } = require('firebase-admin/app');
const { getMessaging } = require('firebase-admin/messaging');

const [saPath, validToken, deadToken] = process.argv.slice(2);
if (!saPath || !validToken || !deadToken) {
  console.error('usage: send.js SA.json VALID_TOKEN DEAD_TOKEN');
  process.exit(2);
}
const sa = JSON.parse(fs.readFileSync(saPath, 'utf8'));
const app = initializeApp({ credential: cert(sa), projectId: sa.project_id });
const messaging = getMessaging(app);

function message(token) {
  return {
    token,
    notification: { title: 'Melding fra skolen', body: 'Ny melding i tråden «Tur»' },
    data: { event: 'ev-1', type: 'message.new', tenant: 'oslo' },
    android: {
      priority: 'high',
      ttl: 3600 * 1000,
      collapseKey: 'thread-1',
      notification: { tag: 'thread-1', channelId: 'messages' },
    },
  };
}

/* The installed firebase-admin version (its package.json is not exported). */
function sdkVersion() {
  const p = path.join(__dirname, 'node_modules', 'firebase-admin', 'package.json');
  return JSON.parse(fs.readFileSync(p, 'utf8')).version;
}

function errInfo(e) {
  return { code: e && e.code, message: e && e.message };
}

async function main() {
  const out = { firebase_admin: sdkVersion(),
                node: process.version, checks: {} };
  const c = out.checks;
  try {
    const name = await messaging.send(message(validToken));
    c.valid = { ok: /^projects\/[^/]+\/messages\/0:\d+%[0-9a-f]+$/.test(name), name };
  } catch (e) {
    c.valid = { ok: false, error: errInfo(e) };
  }
  try {
    const name = await messaging.send(message(deadToken));
    c.unregistered = { ok: false, name };
  } catch (e) {
    c.unregistered = { ok: e.code === 'messaging/registration-token-not-registered',
                       error: errInfo(e) };
  }
  try {
    const name = await messaging.send(message(validToken), true);
    c.dry_run = { ok: name === `projects/${sa.project_id}/messages/fake_message_id`, name };
  } catch (e) {
    c.dry_run = { ok: false, error: errInfo(e) };
  }
  try {
    const r = await messaging.sendEach([message(validToken), message(deadToken)]);
    const [a, b] = r.responses;
    c.send_each = {
      ok: r.successCount === 1 && a.success && !b.success &&
          b.error.code === 'messaging/registration-token-not-registered',
      success_count: r.successCount,
      responses: r.responses.map((x) => (x.success ? { name: x.messageId }
                                                   : { error: errInfo(x.error) })),
    };
  } catch (e) {
    c.send_each = { ok: false, error: errInfo(e) };
  }
  out.ok = Object.values(c).every((x) => x.ok);
  console.log(JSON.stringify(out));
  return out.ok ? 0 : 1;
}

main().then((code) => process.exit(code), (e) => {
  console.log(JSON.stringify({ ok: false, fatal: errInfo(e), stack: e && e.stack }));
  process.exit(1);
});
