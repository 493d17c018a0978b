"""The admin HTTP server (issue #5; docs/admin.md): /metrics through promtool
and against the sandbox's record, /readyz across a Redis restart, the bearer
token, HTTP errors, /v1/events and /v1/devices, a request flood with
slowloris connections beside live deliveries, and the status page in
headless Chromium."""

import http.client
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse

import harness as h
from harness import TestFailure, check, check_eq, wait_for
from statuspage import browser

TOKEN = "it-admin-token-0123456789"


# --------------------------------------------------------------------------
# helpers

def get(port, path, token=None, headers=None, method="GET", body=None, timeout=10.0):
    """One request on a new connection: (status, {header: value}, body text).
    Status 0 when the connection failed."""
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=hdrs)
        resp = c.getresponse()
        data = resp.read().decode("utf-8", "replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    except OSError as e:
        return 0, {}, str(e)
    finally:
        c.close()


def get_json(port, path, token=TOKEN):
    st, _, body = get(port, path, token=token)
    try:
        return st, json.loads(body)
    except ValueError:
        raise TestFailure(f"GET {path}: {st} with a body that is not JSON: {body[:200]!r}")


def raw(port, data, timeout=5.0):
    """Send |data| on a new connection; read until the server closes or
    |timeout|. Returns (bytes received, closed by the server)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out, closed = b"", False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            out += chunk
        return out, closed
    finally:
        s.close()


def admin_stack(ctx, token=TOKEN, **daemon_kw):
    """redis-server + sandbox + varseld with the admin server on a free port."""
    port = h.free_port()
    rs = ctx.redis_server()
    sb = ctx.sandbox()
    admin = {"listen": f"127.0.0.1:{port}"}
    if token:
        admin["token"] = token
    overrides = daemon_kw.pop("overrides", {})
    overrides.setdefault("admin", {}).update(admin)
    d = ctx.daemon(rs, sb, overrides=overrides, **daemon_kw)
    r = ctx.client(rs)
    wait_for(lambda: get(port, "/healthz")[0] == 200, 10, what="the admin server")
    return rs, sb, d, r, port


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """[(name, {label: value}, float)] of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        check(m is not None, f"unparsable metrics line: {line!r}")
        labels = dict(_LABEL.findall(m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def metric_sum(samples, name, **labels):
    return sum(v for n, lb, v in samples
               if n == name and all(lb.get(k) == val for k, val in labels.items()))


def promtool_check(text):
    """Run `promtool check metrics` on |text|; fail the test if it objects."""
    promtool = shutil.which("promtool")
    check(promtool is not None, "promtool not found: install Debian's 'prometheus' package "
          "(apt-get install prometheus), which contains it")
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    check(p.returncode == 0, f"promtool check metrics failed ({p.returncode}): "
          f"{p.stdout.decode(errors='replace')[-1500:]}")


def register(r, users, tenant=h.TENANT):
    """Register one phone per user; returns {user: token}."""
    toks = {u: h.new_token() for u in users}
    h.publish_many(r, [h.device_register(u, "phone", toks[u]) for u in users])
    wait_for(lambda: all(h.devices(r, tenant, u) for u in users), 20, what="registrations")
    return toks


def all_final(r, events):
    for ev in events:
        st = h.status_of(r, ev["tenant"], ev["id"])
        if not st or any(v not in h.FINAL_STATUSES for v in st.values()):
            return False
    return True


def quantile(q, buckets, count):
    """histogram_quantile as the status page computes it (Prometheus's rule)."""
    if count <= 0:
        return None
    rank, lo, below = q * count, 0.0, 0.0
    for le, cum in buckets:
        if cum >= rank:
            return lo + (le - lo) * (rank - below) / (cum - below)
        lo, below = le, cum
    return lo


def expected_page_numbers(stats):
    """What the status page should show for one /v1/stats document."""
    fams = stats["families"]

    def series(name):
        return fams.get(name, {}).get("series", [])

    totals = {}
    for s in series("varsel_deliveries_total"):
        o = s["labels"]["outcome"]
        totals[o] = totals.get(o, 0) + s["value"]
    merged, count = {}, 0
    for s in series("varsel_publish_to_accept_seconds"):
        for le, v in s["buckets"].items():
            merged[float(le)] = merged.get(float(le), 0) + v
        count += s["count"]
    buckets = sorted(merged.items())
    return {
        "totals": totals,
        "lat-p50": quantile(0.5, buckets, count),
        "lat-p90": quantile(0.9, buckets, count),
        "lat-count": count,
        "backlog-lag": sum(s["value"] for s in series("varsel_stream_lag")),
        "backlog-pending": sum(s["value"] for s in series("varsel_stream_pending")),
        "backlog-retry": sum(s["value"] for s in series("varsel_retry_scheduled")),
        "backlog-inflight": sum(s["value"] for s in series("varsel_deliveries_inflight")),
    }


def pct(values, q):
    v = sorted(values)
    if not v:
        return None
    return v[min(len(v) - 1, int(q * len(v)))]


# --------------------------------------------------------------------------
# tests

def test_admin_metrics_promtool_and_sent_count(ctx):
    rs, sb, d, r, port = admin_stack(ctx)
    users = [f"m{i}" for i in range(12)]
    toks = register(r, users)
    # Two tokens are refused (400 BadDeviceToken): not every delivery is "sent".
    sb.set_bad_tokens([toks["m0"], toks["m1"]])
    evs = [h.message_new(users[i % 4: i % 4 + 9], f"t{i}", "Lærer", "Skolen")
           for i in range(15)]
    h.publish_many(r, evs)
    wait_for(lambda: all_final(r, evs), 40, what="every delivery final")

    def settled():
        st, hd, text = get(port, "/metrics")
        if st != 200:
            return None
        sent = metric_sum(parse_metrics(text), "varsel_deliveries_total", outcome="sent")
        accepted = len(sb.accepted())
        return (text, hd, sent, accepted) if sent == accepted and sent > 0 else None
    text, hd, sent, accepted = wait_for(settled, 20, what=lambda: "varsel_deliveries_total"
                                        f"{{outcome=sent}} to equal the sandbox's 200s "
                                        f"({len(sb.accepted())})")
    check(hd.get("content-type", "").startswith("text/plain; version=0.0.4"),
          f"content type of /metrics: {hd.get('content-type')!r}")
    promtool_check(text)
    samples = parse_metrics(text)
    statuses = [rec.get("status") for rec in sb.records()]
    check_eq(statuses.count(200), int(sent), "sent deliveries vs the sandbox's 200s")
    invalid = metric_sum(samples, "varsel_deliveries_total", outcome="invalid_token")
    check(invalid >= 2, f"invalid_token deliveries counted: {invalid}")
    # /metrics needs no token even with one configured.
    check_eq(200, get(port, "/metrics")[0], "/metrics without a token")
    ctx.note(f"{int(sent)} sent = {statuses.count(200)} sandbox 200s; "
             f"{int(invalid)} invalid_token; promtool check metrics: ok")


def test_admin_readyz_follows_redis(ctx):
    rs, sb, d, r, port = admin_stack(ctx)
    wait_for(lambda: get_json(port, "/readyz")[0] == 200, 20, what="/readyz 200")
    st, body = get_json(port, "/readyz")
    check_eq({"ready": True, "reasons": []}, body, "/readyz when ready")
    r.close()
    rs.stop()
    t0 = time.monotonic()

    def not_ready():
        st, body = get_json(port, "/readyz")
        return body if st == 503 else None
    body = wait_for(not_ready, 20, what="/readyz 503 after Redis stopped")
    took_down = time.monotonic() - t0
    check(body.get("ready") is False, f"ready flag: {body}")
    check(any("redis" in x for x in body.get("reasons", [])), f"a Redis reason: {body}")
    # The rest of the admin server keeps working without Redis.
    check_eq(200, get(port, "/healthz")[0], "/healthz while Redis is down")
    check_eq(200, get(port, "/metrics")[0], "/metrics while Redis is down")
    st, err = get_json(port, "/v1/events/oslo/x")
    check_eq(503, st, "/v1/events while Redis is down")
    rs.start(port=rs.port)
    t1 = time.monotonic()
    wait_for(lambda: get_json(port, "/readyz")[0] == 200, 40,
             what=lambda: f"/readyz 200 after Redis came back: {get_json(port, '/readyz')}")
    ctx.note(f"/readyz 503 {took_down:.1f}s after Redis stopped ({body['reasons']}); "
             f"200 again {time.monotonic() - t1:.1f}s after it restarted")


def test_admin_token_and_http_errors(ctx):
    rs, sb, d, r, port = admin_stack(ctx)
    wait_for(lambda: get(port, "/readyz", token=TOKEN)[0] == 200, 20, what="ready")
    # Open without the token.
    for path in ("/healthz", "/metrics"):
        check_eq(200, get(port, path)[0], f"{path} without a token")
    # Everything else: 401 without or with a wrong token, 200 with it.
    for path in ("/", "/readyz", "/v1/stats"):
        st, hd, body = get(port, path)
        check_eq(401, st, f"{path} without a token")
        check(hd.get("www-authenticate", "").startswith("Bearer"), f"{path}: {hd}")
        check_eq({"error": "unauthorized"}, json.loads(body), f"{path} 401 body")
        check_eq(401, get(port, path, token="wrong-token-0123456789")[0], f"{path} wrong token")
        check_eq(401, get(port, path, headers={"Authorization": f"Basic {TOKEN}"})[0],
                 f"{path} with Basic")
        check_eq(200, get(port, path, token=TOKEN)[0], f"{path} with the token")
    check_eq(401, get(port, "/v1/events/oslo/x")[0], "/v1/events without a token")
    # The page also takes ?token=, the API does not.
    st, hd, body = get(port, "/?token=" + urllib.parse.quote(TOKEN))
    check_eq(200, st, "/?token=")
    check(hd.get("content-type", "").startswith("text/html"), f"page type {hd}")
    check("default-src 'none'" in hd.get("content-security-policy", ""), f"CSP: {hd}")
    check_eq(401, get(port, "/v1/stats?token=" + TOKEN)[0], "/v1/stats?token=")
    # 404, 405.
    st, hd, body = get(port, "/nope", token=TOKEN)
    check_eq(404, st, "unknown path")
    check_eq({"error": "not found"}, json.loads(body), "404 body")
    check(hd.get("content-type") == "application/json", f"404 type: {hd}")
    check_eq(404, get(port, "/nope")[0], "unknown path without a token")
    st, hd, body = get(port, "/v1/stats", token=TOKEN, method="POST", body=b"{}")
    check_eq(405, st, "POST")
    check_eq("GET", hd.get("allow"), "Allow header")
    check_eq(405, get(port, "/healthz", method="DELETE")[0], "DELETE")
    # Malformed, oversized: an HTTP error, then the connection is closed.
    for data, want in ((b"HELLO THERE\r\n\r\n", b"HTTP/1.1 400 "),
                       (b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", b"HTTP/1.1 400 "),
                       (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
                        b"HTTP/1.1 431 "),
                       (b"GET /" + b"u" * 3000 + b" HTTP/1.1\r\n\r\n", b"HTTP/1.1 414 "),
                       (b"GET /healthz HTTP/1.1\r\nContent-Length: 50000\r\n\r\n" + b"x" * 20000,
                        b"HTTP/1.1 413 ")):
        out, closed = raw(port, data)
        check(out.startswith(want), f"{data[:40]!r}...: expected {want!r}, got {out[:120]!r}")
        check(b"Connection: close" in out, f"{want!r}: Connection: close in {out[:300]!r}")
        check(closed, f"{want!r}: the server closes the connection")
    # Keep-alive: several requests on one connection; HTTP/1.0 is answered too.
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for path in ("/healthz", "/metrics", "/nope", "/healthz"):
        c.request("GET", path)
        resp = c.getresponse()
        resp.read()
        check(resp.status in (200, 404), f"keep-alive {path}: {resp.status}")
    c.close()
    out, closed = raw(port, b"GET /healthz HTTP/1.0\r\n\r\n")
    check(out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"ok") and closed,
          f"HTTP/1.0: {out!r}")

    # A non-loopback address without a token: varseld refuses to start.
    sections = d.config_sections()
    sections["admin"] = {"listen": f"0.0.0.0:{h.free_port()}"}
    bad = d.write_config(ctx.tmp / "no-token.ini", sections)
    rc, out = d.run_check_config(bad)
    check_eq(1, rc, "--check-config exit code")
    check("[admin] token" in out and "loopback" in out, f"the error names the key: {out}")
    p = subprocess.Popen([str(ctx.varseld), "--config", str(bad)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out2, _ = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise TestFailure("varseld started with a non-loopback admin address and no token")
    check_eq(1, p.returncode, "varseld exit code")
    check(b"[admin] token: required" in out2, f"start-up error: {out2!r}")
    # The same address with a token is accepted.
    sections["admin"]["token"] = TOKEN
    ok = d.write_config(ctx.tmp / "with-token.ini", sections)
    rc, out = d.run_check_config(ok)
    check_eq(0, rc, f"--check-config with a token: {out}")


def test_admin_event_and_devices(ctx):
    rs, sb, d, r, port = admin_stack(ctx)
    toks = {dev: h.new_token() for dev in ("phone", "tablet", "old")}
    h.publish_many(r, [h.device_register("kari", dev, tok) for dev, tok in toks.items()])
    wait_for(lambda: len(h.devices(r, h.TENANT, "kari")) == 3, 20, what="3 devices")
    sb.set_bad_tokens([toks["old"]])
    odd_id = "msg/2026 #1?x&y=%z"
    ev = h.message_new(["kari"], "t1", "Lærer", "Skolen", id=odd_id)
    h.publish(r, ev)
    wait_for(lambda: all_final(r, [ev]), 30, what="final statuses")
    want = h.status_of(r, h.TENANT, odd_id)
    st, body = get_json(port, "/v1/events/oslo/" + urllib.parse.quote(odd_id, safe=""))
    check_eq(200, st, f"/v1/events: {body}")
    check_eq("oslo", body["tenant"], "tenant")
    check_eq(odd_id, body["event"], "event id (percent-decoded)")
    got = {f"{x['user']}:{x['device']}": x["status"] for x in body["deliveries"]}
    check_eq(want, got, "deliveries vs the status hash")
    check_eq("invalid_token", got.get("kari:old"), "the refused token's delivery")
    check_eq(sorted(got), [f"{x['user']}:{x['device']}" for x in body["deliveries"]],
             "deliveries sorted")
    # Devices: the refused token was removed; the others are shown cut.
    st, hd, text = get(port, "/v1/devices/oslo/kari", token=TOKEN)
    check_eq(200, st, f"/v1/devices: {text}")
    body = json.loads(text)
    check_eq({"tenant": "oslo", "user": "kari"}, {k: body[k] for k in ("tenant", "user")},
             "devices header fields")
    devs = {x["device"]: x for x in body["devices"]}
    check_eq(["phone", "tablet"], sorted(devs), "devices listed")
    for dev in ("phone", "tablet"):
        check_eq(toks[dev][:8] + "…", devs[dev]["token"], f"{dev} token cut to 8 + …")
        check_eq("ios", devs[dev]["platform"], f"{dev} platform")
        check_eq("demo", devs[dev]["app"], f"{dev} app")
        check("updated_at" in devs[dev], f"{dev} updated_at")
    for tok in toks.values():
        check(tok not in text and tok[8:] not in text, "no whole token in /v1/devices")
    # Unknown, malformed.
    for path, want_st in (("/v1/events/oslo/no-such-event", 404),
                          ("/v1/devices/oslo/nobody", 404),
                          ("/v1/devices/bergen/kari", 404),
                          ("/v1/events/Oslo/x", 400),
                          ("/v1/events/oslo/a%00b", 400),
                          ("/v1/events/oslo/a%0Ab", 400),
                          ("/v1/events/oslo/a%zz", 400),
                          ("/v1/events/oslo/", 400),
                          ("/v1/events/oslo", 404)):
        st, body = get_json(port, path)
        check_eq(want_st, st, f"GET {path}: {body}")
        check("error" in body, f"GET {path}: error field in {body}")


@h.timeout(300)
def test_admin_flood_and_slowloris(ctx):
    rs, sb, d, r, port = admin_stack(ctx, log_level="info")
    users = [f"f{i}" for i in range(40)]
    register(r, users)
    wait_for(lambda: get(port, "/readyz", token=TOKEN)[0] == 200, 20, what="ready")

    def deliver(n, tag, pause=0.0):
        evs = []
        for i in range(n):
            ev = h.message_new([users[i % len(users)]], f"{tag}{i}", "A", "B")
            h.publish(pub, ev)
            evs.append(ev)
            if pause:
                time.sleep(pause)
        return evs

    def latencies(evs):
        ids = {e["id"] for e in evs}
        return [int(x["latency_ms"]) for x in h.receipts(r)
                if x.get("event") in ids and x.get("status") == "sent"]

    pub = ctx.client(rs)
    base = deliver(40, "base", pause=0.02)
    wait_for(lambda: all_final(r, base), 30, what="baseline deliveries")
    base_lat = latencies(base)

    # 50 slowloris connections: headers that never end, one byte a second.
    slow_result = {}

    def slowloris(i):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        t0 = time.monotonic()
        got = b""
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            s.settimeout(1.0)
            while time.monotonic() - t0 < 30:
                try:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                except socket.timeout:
                    try:
                        s.sendall(b"a")
                    except OSError:
                        break
                except OSError:
                    break
        finally:
            slow_result[i] = (time.monotonic() - t0, got)
            s.close()
    slow = [threading.Thread(target=slowloris, args=(i,), daemon=True) for i in range(50)]
    for t in slow:
        t.start()
    time.sleep(0.5)

    # The flood: 10,000 requests over 4 keep-alive connections.
    paths = [("/healthz", 200), ("/metrics", 200), ("/v1/stats", 200), ("/readyz", 200),
             ("/nope", 404)]
    flood_err = []
    done = [0]
    lock = threading.Lock()

    def flood(k, n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for i in range(n):
                path, want = paths[(i + k) % len(paths)]
                c.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
                resp = c.getresponse()
                resp.read()
                if resp.status != want:
                    flood_err.append(f"{path}: {resp.status}")
                    if len(flood_err) > 20:
                        return
                with lock:
                    done[0] += 1
        except (OSError, http.client.HTTPException) as e:
            flood_err.append(f"connection {k}: {e!r}")
        finally:
            c.close()
    t_flood = time.monotonic()
    workers = [threading.Thread(target=flood, args=(k, 2500), daemon=True) for k in range(4)]
    for t in workers:
        t.start()
    # Deliveries published while the flood runs.
    during = deliver(60, "flood", pause=0.02)
    for t in workers:
        t.join(240)
    flood_s = time.monotonic() - t_flood
    check(not flood_err, f"flood answers: {flood_err[:5]}")
    check_eq(10000, done[0], "flood requests answered")
    wait_for(lambda: all_final(r, during), 60, what="deliveries published during the flood")
    during_lat = latencies(during)
    check_eq(len(during), len(during_lat), "every delivery during the flood was sent")

    for t in slow:
        t.join(40)
    check_eq(50, len(slow_result), "slowloris connections finished")
    closed_after = sorted(v[0] for v in slow_result.values())
    timed_out = [v for v in slow_result.values() if v[1].startswith(b"HTTP/1.1 408 ")]
    check_eq(50, len(timed_out), f"408 for every slowloris connection "
             f"({[v[1][:40] for v in slow_result.values()][:3]})")
    check(closed_after[-1] < 20, f"slowloris connections closed after {closed_after[-1]:.1f}s")
    check(closed_after[0] >= 9, f"a slowloris connection closed early: {closed_after[0]:.1f}s")
    st, stats = get_json(port, "/v1/stats")
    check(stats["admin"]["timeouts"] >= 50, f"admin timeouts: {stats['admin']}")
    check_eq(200, get(port, "/healthz")[0], "still serving after the flood")
    ctx.note(f"flood: 10000 requests on 4 keep-alive connections in {flood_s:.2f}s "
             f"({10000 / flood_s:.0f}/s) beside 50 slowloris connections (closed with 408 "
             f"after {closed_after[0]:.1f}-{closed_after[-1]:.1f}s)")
    ctx.note(f"publish->sent latency: baseline p50 {pct(base_lat, 0.5)} ms, max "
             f"{max(base_lat)} ms; during the flood p50 {pct(during_lat, 0.5)} ms, p90 "
             f"{pct(during_lat, 0.9)} ms, max {max(during_lat)} ms ({len(during_lat)} sent)")


@h.timeout(240)
def test_admin_status_page_in_chromium(ctx):
    chrome = browser.find_chromium()
    check(chrome is not None, "chromium not found: install Debian's 'chromium' package "
          "(apt-get install chromium)")
    rs, sb, d, r, port = admin_stack(ctx)
    users = [f"p{i}" for i in range(10)]
    toks = register(r, users)
    sb.set_bad_tokens([toks["p0"]])
    evs = [h.message_new(users[i % 3: i % 3 + 6], f"t{i}", "A", "B") for i in range(12)]
    h.publish_many(r, evs)
    wait_for(lambda: all_final(r, evs), 40, what="deliveries final")

    # Wait until the figures stand still (the Redis gauges are polled).
    def steady():
        _, a = get_json(port, "/v1/stats")
        time.sleep(1.2)
        _, b = get_json(port, "/v1/stats")
        ea, eb = expected_page_numbers(a), expected_page_numbers(b)
        return eb if ea == eb and eb["backlog-inflight"] == 0 else None
    wait_for(steady, 30, what="steady figures")

    page = get(port, "/", token=TOKEN)[2]
    for m in re.finditer(r"https?://[^\s'\"<>)]*", page):
        check(m.group(0) == "http://www.w3.org/2000/svg",
              f"the page names an external URL: {m.group(0)}")

    b = browser.Chromium(ctx, workdir=ctx.tmp / "chromium")
    url = f"http://127.0.0.1:{port}/?token={urllib.parse.quote(TOKEN)}"
    dom = b.dump_dom(url, budget_ms=7000)
    nums = browser.page_numbers(dom)
    _, stats = get_json(port, "/v1/stats")
    want = expected_page_numbers(stats)
    sample = nums.get("sample", {}).get("attrs", {})
    check(int(sample.get("data-polls", 0)) >= 3, f"the page polled {sample}")
    check_eq("0", sample.get("data-errors"), "polling errors")

    def shown(ident):
        check(ident in nums, f"#{ident} is on the page")
        v = nums[ident]["attrs"].get("data-value", "")
        return None if v == "" else float(v)

    def close(a, b_):
        if a is None or b_ is None:
            return a is None and b_ is None
        return abs(a - b_) <= 1e-9 * max(1.0, abs(b_))
    compared = []
    for outcome, v in sorted(want["totals"].items()):
        check(close(shown(f"total-{outcome}"), v),
              f"total-{outcome}: page {shown(f'total-{outcome}')}, /v1/stats {v}")
        compared.append(f"{outcome}={v:g}")
    check(want["totals"].get("sent", 0) > 0 and want["totals"].get("invalid_token", 0) > 0,
          f"traffic of two outcomes: {want['totals']}")
    for key in ("lat-p50", "lat-p90", "lat-count", "backlog-lag", "backlog-pending",
                "backlog-retry", "backlog-inflight"):
        check(close(shown(key), want[key]), f"{key}: page {shown(key)}, /v1/stats {want[key]}")
    check("ms" in nums["lat-p50"]["text"] or " s" in nums["lat-p50"]["text"],
          f"p50 shown as text: {nums['lat-p50']['text']!r}")
    check_eq("up", nums.get("redis-state", {}).get("attrs", {}).get("data-value"),
             "redis state on the page")

    # A screenshot while a little traffic flows, kept as an artefact.
    stop = threading.Event()
    pub = ctx.client(rs)

    def trickle():
        i = 0
        while not stop.is_set() and i < 200:
            h.publish(pub, h.message_new([users[1 + i % 9]], f"s{i}", "A", "B"))
            i += 1
            time.sleep(0.05)
    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        shot = b.screenshot(url, ctx.tmp / "status-page.png", budget_ms=15000,
                            window=(1280, 1000))
    finally:
        stop.set()
        t.join(10)
    print(f"status page screenshot: {shot}")
    ctx.note(f"page matched /v1/stats ({', '.join(compared)}; p50 {want['lat-p50']:.4f}s, "
             f"p90 {want['lat-p90']:.4f}s) after {sample.get('data-polls')} polls; "
             f"screenshot: {shot}")
