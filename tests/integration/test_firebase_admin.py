"""The sandbox's FCM and OAuth fakes checked against clients we did not write.

- test_firebase_admin_cross_check: Google's official Node SDK, firebase-admin
  13.x (pinned in firebase_admin/package.json and package-lock.json), signs
  its own service-account assertion, gets an access token from the
  sandbox's /token and sends with send() (HTTP/1.1) and sendEach() (HTTP/2,
  which sends ":scheme: https:"), a dry run and a message to an
  unregistered token. Its fixed hosts (fcm.googleapis.com,
  oauth2.googleapis.com) are redirected to the sandbox by a --require
  preload (firebase_admin/redirect.js) that refuses every other host.
  Needs node and npm: without them the test FAILS (it is never skipped).
  VARSEL_NODE=/path/to/node runs send.js with another Node.js (e.g. to
  check Debian 12's 18.x next to a newer one).
  `npm ci` runs once and node_modules is kept in firebase_admin/ (keyed by
  a hash of package-lock.json).
- test_fcm_sandbox_cli_contract: the same endpoints from Python's
  standard library (http.client over TLS, HTTP/1.1; the assertion signed
  with the openssl tool), plus the command-line contract: gen-service-account,
  the "fcm" port, --oauth-expires-in, the record and the summary.
"""

import base64
import hashlib
import http.client
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import harness as h
from harness import check, check_eq

HERE = Path(__file__).resolve().parent
FA_DIR = HERE / "firebase_admin"
SCOPE_FCM = "https://www.googleapis.com/auth/firebase.messaging"


def _tail(text, n=25):
    return "\n    ".join(text.splitlines()[-n:])


def node_binary():
    return os.environ.get("VARSEL_NODE") or shutil.which("node")


def npm_ci():
    """Install the pinned firebase-admin once (npm ci), or fail clearly."""
    node, npm = node_binary(), shutil.which("npm")
    check(node is not None and npm is not None,
          "node and npm are required for the firebase-admin cross-check but were not found "
          "on PATH (Debian 12: apt-get install nodejs npm; scripts/setup.sh installs them)")
    v = subprocess.run([node, "--version"], stdout=subprocess.PIPE, text=True, timeout=30)
    major = int(v.stdout.strip().lstrip("v").split(".")[0] or 0)
    check(major >= 18, f"firebase-admin 13 needs Node.js >= 18, found {v.stdout.strip()}")
    lock = (FA_DIR / "package-lock.json").read_bytes()
    want = hashlib.sha256(lock).hexdigest()
    stamp = FA_DIR / "node_modules" / ".varsel-lock-sha256"
    installed = FA_DIR / "node_modules" / "firebase-admin" / "package.json"
    if stamp.exists() and stamp.read_text().strip() == want and installed.exists():
        return
    p = subprocess.run([npm, "ci", "--omit=optional", "--no-audit", "--no-fund",
                        "--loglevel=error"], cwd=FA_DIR, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    check(p.returncode == 0, f"npm ci in {FA_DIR} failed ({p.returncode}):\n    "
                             f"{_tail(p.stdout)}")
    check(installed.exists(), "npm ci installed no firebase-admin")
    stamp.write_text(want + "\n")


@h.timeout(900)
def test_firebase_admin_cross_check(ctx):
    npm_ci()
    sb = ctx.sandbox(fcm=True)
    valid, dead = h.new_fcm_token(), h.new_fcm_token()
    sb.set_fcm_unregistered([dead])
    redirect_log = ctx.tmp / "redirect.json"
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=str(sb.ca), VARSEL_SANDBOX_PORT=str(sb.fcm_port),
               VARSEL_REDIRECT_LOG=str(redirect_log))
    for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "GOOGLE_APPLICATION_CREDENTIALS",
              "FIREBASE_CONFIG", "GCLOUD_PROJECT", "GOOGLE_CLOUD_PROJECT"):
        env.pop(k, None)
    p = subprocess.run([node_binary(), "--require", str(FA_DIR / "redirect.js"),
                        str(FA_DIR / "send.js"),
                        str(sb.service_account), valid, dead], cwd=FA_DIR, env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=180)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    check(lines, f"send.js printed no result (exit {p.returncode}); stderr:\n    "
                 f"{_tail(p.stderr)}")
    out = json.loads(lines[-1])
    check(p.returncode == 0 and out.get("ok"),
          f"firebase-admin cross-check failed (exit {p.returncode}): {json.dumps(out)}\n"
          f"    stderr: {_tail(p.stderr, 10)}")
    c = out["checks"]
    check_eq("messaging/registration-token-not-registered", c["unregistered"]["error"]["code"],
             "firebase-admin's error code for an unregistered token")
    check_eq(f"projects/{sb.fcm_project}/messages/fake_message_id", c["dry_run"]["name"], "dry run")
    ctx.note(f"firebase-admin {out['firebase_admin']} on node {out['node']}: "
             f"send {c['valid']['name']}")

    # Only the two Google hosts were contacted, and all went to the sandbox.
    log = json.loads(redirect_log.read_text())
    check(all(e["action"] == "redirected" for e in log), f"refused connections: {log}")
    check({e["host"] for e in log} <= {"fcm.googleapis.com", "oauth2.googleapis.com"},
          f"hosts contacted: {log}")

    # The sandbox's side.
    oauth = sb.oauth_records()
    check(oauth and all(r["status"] == 200 for r in oauth), f"token requests: {oauth}")
    t = oauth[0]
    sa = json.loads(sb.service_account.read_text())
    check_eq(sa["client_email"], t["iss"], "assertion iss")
    # google-auth-library's assertion header has no kid (the key is then
    # found through iss); when present it must be the account's.
    check(t["kid"] in (None, sa["private_key_id"]), f"assertion kid: {t['kid']}")
    check(SCOPE_FCM in t["scope"].split(), f"assertion scope: {t['scope']}")
    check(t["aud"] in ("https://oauth2.googleapis.com/token",
                       "https://accounts.google.com/o/oauth2/token"), f"aud: {t['aud']}")
    fcm = sb.fcm_records()
    check(len(fcm) == 5, f"expected 5 FCM requests, got {len(fcm)}: "
                         f"{[(r['status'], r['http']) for r in fcm]}")
    check(all(r["authorization_ok"] for r in fcm), "every FCM request carried a valid token")
    ok = [r for r in fcm if r["token"] == valid and r["status"] == 200]
    gone = [r for r in fcm if r["token"] == dead]
    check_eq(3, len(ok), "successes for the valid token (send, dry run, sendEach)")
    check(gone and all(r["status"] == 404 and r["reason"] == "UNREGISTERED" for r in gone),
          f"unregistered answers: {gone}")
    h1 = [r for r in fcm if r["http"] == "http/1.1"]
    h2 = [r for r in fcm if r["http"] == "h2"]
    check_eq(3, len(h1), "send() requests over HTTP/1.1")
    check_eq(2, len(h2), "sendEach() requests over HTTP/2")
    check(all(r["scheme"] == "https:" for r in h2),
          f"firebase-admin's sendEach :scheme (accepted as Google does): {[r['scheme'] for r in h2]}")
    msg = ok[0]["payload"]["message"]
    check_eq("3600s", msg["android"]["ttl"], "android.ttl as firebase-admin encodes it")
    check_eq("high", msg["android"]["priority"], "android.priority (lowercase, accepted)")
    check_eq("messages", msg["android"]["notification"]["channel_id"], "channel_id")
    check(all(isinstance(v, str) for v in msg["data"].values()), "data values are strings")
    check([r for r in fcm if r["validate_only"]], "the dry run is recorded as validate_only")
    check_eq(0, sb.stop(), "sandbox exit code")
    s = sb.summary()
    check(s is not None, "summary line")
    check_eq(3, s["fcm"].get("200"), "summary: FCM successes")
    check_eq(2, s["fcm"].get("UNREGISTERED"), "summary: UNREGISTERED")
    check(all(c_["max_concurrent_streams"] <= 100 for c_ in s["per_connection"]),
          "never more than 100 streams on a connection")


# ---- the same endpoints from Python, and the command-line contract ---------

def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rs256_assertion(sa_path, aud, iat=None, lifetime=3600, tmpdir=None):
    """A service-account assertion signed with the openssl tool."""
    sa = json.loads(Path(sa_path).read_text())
    iat = int(iat if iat is not None else time.time())
    head = _b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": sa["private_key_id"]},
                              separators=(",", ":")).encode())
    claims = _b64url(json.dumps({"iss": sa["client_email"], "scope": SCOPE_FCM, "aud": aud,
                                 "iat": iat, "exp": iat + lifetime},
                                separators=(",", ":")).encode())
    with tempfile.NamedTemporaryFile("w", suffix=".pem", dir=tmpdir, delete=False) as f:
        f.write(sa["private_key"])
        keyfile = f.name
    try:
        p = subprocess.run(["openssl", "dgst", "-sha256", "-sign", keyfile],
                           input=f"{head}.{claims}".encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
    finally:
        os.unlink(keyfile)
    check(p.returncode == 0, f"openssl dgst -sign: {p.stderr.decode()[-300:]}")
    return f"{head}.{claims}.{_b64url(p.stdout)}"


def https_post(sb, path, body, headers, conn=None):
    """POST over HTTP/1.1 with TLS (sandbox CA). Returns (status, headers, body, conn)."""
    if conn is None:
        ctx = ssl.create_default_context(cafile=str(sb.ca))
        conn = http.client.HTTPSConnection("127.0.0.1", sb.fcm_port, context=ctx, timeout=20)
    conn.request("POST", path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read().decode()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data, conn


def test_fcm_sandbox_cli_contract(ctx):
    sb = ctx.sandbox(fcm=True, oauth_expires_in=2)
    sa = json.loads(sb.service_account.read_text())
    for field in ("type", "project_id", "private_key_id", "private_key", "client_email",
                  "client_id", "auth_uri", "token_uri", "auth_provider_x509_cert_url",
                  "client_x509_cert_url", "universe_domain"):
        check(field in sa, f"service account lacks {field}")
    check_eq("service_account", sa["type"], "type")
    check_eq(h.FCM_PROJECT, sa["project_id"], "project_id")
    check(sa["private_key"].startswith("-----BEGIN PRIVATE KEY-----\n"), "PKCS#8 PEM key")
    check_eq(0o600, sb.service_account.stat().st_mode & 0o777, "key file mode")
    check(sb.fcm_url.startswith("https://127.0.0.1:") and sb.token_url.endswith("/token"), "URLs")

    form = ("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=" +
            rs256_assertion(sb.service_account, sb.token_url, tmpdir=ctx.tmp))
    st, hd, body, conn = https_post(sb, "/token", form,
                                    {"Content-Type": "application/x-www-form-urlencoded"})
    check_eq(200, st, f"token request: {body}")
    tok = json.loads(body)
    check_eq(2, tok["expires_in"], "expires_in follows --oauth-expires-in")
    check_eq("Bearer", tok["token_type"], "token_type")
    auth = {"Authorization": f"Bearer {tok['access_token']}",
            "Content-Type": "application/json"}
    good, dead = h.new_fcm_token(), h.new_fcm_token()
    path = f"/v1/projects/{sb.fcm_project}/messages:send"
    msg = lambda t: json.dumps({"message": {"token": t, "data": {"k": "v"}}})  # noqa: E731
    st, hd, body, conn = https_post(sb, path, msg(good), auth, conn)  # same connection
    check_eq(200, st, f"send: {body}")
    check(json.loads(body)["name"].startswith(f"projects/{sb.fcm_project}/messages/0:"), body)
    sb.set_fcm_unregistered([dead])
    st, hd, body, conn = https_post(sb, path, msg(dead), auth, conn)
    check_eq(404, st, f"unregistered: {body}")
    err = json.loads(body)["error"]
    check_eq("NOT_FOUND", err["status"], "status")
    check_eq("UNREGISTERED", err["details"][0]["errorCode"], "errorCode")
    st, hd, body, conn = https_post(sb, path, json.dumps({"message": {"token": good,
                                                                      "data": {"n": 12}}}),
                                    auth, conn)
    check_eq(400, st, "a number in data")
    check_eq("Invalid value at 'message.data[0].value' (TYPE_STRING), 12",
             json.loads(body)["error"]["message"], "Google's text")
    time.sleep(2.2)  # the access token has expired
    st, hd, body, conn = https_post(sb, path, msg(good), auth, conn)
    check_eq(401, st, "expired token")
    check(json.loads(body)["error"]["message"].startswith(
        "Request had invalid authentication credentials."), body)
    check("www-authenticate" in hd, "401 carries www-authenticate")
    conn.close()
    check_eq(0, sb.stop(), "sandbox exit code")
    recs = sb.fcm_records()
    check_eq([200, 404, 400, 401], [r["status"] for r in recs], "recorded statuses")
    check(all(r["http"] == "http/1.1" for r in recs), "Python's http.client speaks HTTP/1.1")
    check_eq(["ok", "ok", "ok", "expired"], [r["auth"] for r in recs], "auth outcomes")
    s = sb.summary()
    check_eq(1, s["oauth"]["tokens_issued"], "tokens issued")
    check_eq(1, s["fcm"]["UNREGISTERED"], "summary UNREGISTERED")
    check_eq(1, s["fcm"]["UNAUTHENTICATED"], "summary UNAUTHENTICATED")
    check_eq(1, len([c for c in s["per_connection"] if c["listener"] == "fcm"]),
             "one keep-alive connection for everything")
