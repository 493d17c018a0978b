'use strict';
/*
 * Preload for send.js (node --require ./redirect.js): firebase-admin and
 * google-auth-library have their hosts built in (fcm.googleapis.com,
 * oauth2.googleapis.com), so inside the test every TLS connection to those
 * two hosts goes to varsel-sandbox on 127.0.0.1:$VARSEL_SANDBOX_PORT
 * instead, with the SNI server name kept. The sandbox certificate is for
 * localhost / 127.0.0.1 and is trusted through NODE_EXTRA_CA_CERTS, so the
 * chain is still verified; the name check is done against "localhost".
 * Every other host, TLS or plain TCP, is refused: the test must never reach
 * the network (e.g. a metadata-server probe would fail loudly here).
 *
 * Patched: tls.connect (used by https.Agent, http2.connect and fetch), and
 * net.connect / net.createConnection (plain TCP) for non-loopback hosts.
 */
const tls = require('tls');
const net = require('net');

const PORT = Number(process.env.VARSEL_SANDBOX_PORT);
if (!Number.isInteger(PORT) || PORT <= 0) {
  throw new Error('redirect.js: VARSEL_SANDBOX_PORT is not set');
}
const HOSTS = new Set(['fcm.googleapis.com', 'oauth2.googleapis.com']);
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);
const log = [];
process.on('exit', () => {
  if (process.env.VARSEL_REDIRECT_LOG) {
    require('fs').writeFileSync(process.env.VARSEL_REDIRECT_LOG, JSON.stringify(log) + '\n');
  }
});

/* A socket that fails at once: the caller sees an ordinary connection error. */
function refused(host, kind) {
  log.push({ host, kind, action: 'refused' });
  const s = new net.Socket();
  process.nextTick(() => s.destroy(new Error(`redirect.js: refused ${kind} connection to ${host}`)));
  return s;
}

/* tls.connect(options[, cb]) | tls.connect(port[, host][, options][, cb]) */
function normalize(args) {
  let opts = {};
  let cb;
  const a = [...args];
  if (typeof a[a.length - 1] === 'function') cb = a.pop();
  if (a.length && typeof a[0] === 'object' && a[0] !== null) {
    opts = { ...a[0] };
  } else {
    if (a.length) opts.port = a.shift();
    if (typeof a[0] === 'string') opts.host = a.shift();
    if (a.length && typeof a[0] === 'object' && a[0] !== null) opts = { ...a.shift(), ...opts };
  }
  return { opts, cb };
}

const tlsConnect = tls.connect;
tls.connect = function connect(...args) {
  const { opts, cb } = normalize(args);
  const host = opts.host || opts.servername || 'localhost';
  if (!HOSTS.has(host)) {
    return refused(host, 'TLS');
  }
  log.push({ host, kind: 'TLS', action: 'redirected', alpn: opts.ALPNProtocols || null });
  const redirected = {
    ...opts,
    host: '127.0.0.1',
    port: PORT,
    servername: host,
    checkServerIdentity: (_name, cert) => tls.checkServerIdentity('localhost', cert),
  };
  delete redirected.path;
  return cb ? tlsConnect.call(this, redirected, cb) : tlsConnect.call(this, redirected);
};

for (const name of ['connect', 'createConnection']) {
  const orig = net[name];
  net[name] = function (...args) {
    const { opts } = normalize(args);
    const host = opts.host || 'localhost';
    if (opts.path === undefined && !LOOPBACK.has(host)) {
      return refused(host, 'TCP');
    }
    return orig.apply(this, args);
  };
}
