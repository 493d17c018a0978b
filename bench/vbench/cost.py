"""cost: instructions per delivered notification, under callgrind.

varseld runs under `valgrind --tool=callgrind` twice, on a small backlog
(EVENTS × RECIPIENTS) and on twice that; h2load runs under callgrind twice
with the same request shape (captured from varseld), connections and
streams, for the same two counts. The difference between the two runs
divided by the difference in notifications is the marginal cost: start-up
(config, templates, key loading, TLS set-up) cancels out. The same
difference per function (callgrind_annotate, self cost) gives the top
functions per notification, and per shared object the libraries the
instructions go to.

Instruction counts are deterministic enough that one run of each size is
enough; the machine's noise does not enter them.
"""

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from . import common as c
from .ceiling import h2load_args

NAME = "cost"
HELP = "instructions per notification (callgrind) vs h2load per request"
QUICK = ["--events", "50"]

LINE_RE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.+?)\s*$")


def add_args(p):
    p.add_argument("--events", type=int, default=200, help="events in the larger run "
                   "(the smaller run has half)")
    p.add_argument("--recipients", type=int, default=10)
    p.add_argument("--connections", type=int, default=2)
    p.add_argument("--payload", choices=("short", "long"), default="short")
    p.add_argument("--top", type=int, default=10)


def callgrind_totals(path):
    """Total Ir of a callgrind output file."""
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise c.BenchError(f"no totals in {path}")


def per_function(path, inclusive=False):
    """{'file:function [object]': self (or inclusive) Ir} from callgrind_annotate."""
    rc, out, _ = c.run_tool(["callgrind_annotate", "--threshold=100",
                             f"--inclusive={'yes' if inclusive else 'no'}",
                             "--auto=no", str(path)], timeout=300)
    if rc != 0:
        raise c.BenchError(f"callgrind_annotate failed: {out[-800:]}")
    res, started = {}, False
    for line in out.splitlines():
        if "file:function" in line:
            started = True
            continue
        if not started:
            continue
        if not line.strip():
            if res:
                break  # the end of the function table
            continue
        m = LINE_RE.match(line)
        if m:
            name = m.group(2)
            res[name] = res.get(name, 0) + int(m.group(1).replace(",", ""))
    return res


def split_name(name, program):
    """('function', 'object') from 'file:function [/path/object]'.

    callgrind_annotate leaves the object out on some lines; then a file
    path under the repository means the program itself and a relative
    path ('./malloc/...', glibc's build paths) means libc.
    """
    m = re.match(r"^(.*?)\s+\[(.+)\]$", name)
    obj = None
    if m:
        name, obj = m.group(1), os.path.basename(m.group(2))
    file, _, fn = name.rpartition(":")
    if obj is None:
        if file.startswith(str(c.REPO)):
            obj = program
        elif file.startswith("./"):
            obj = "libc.so.6"
        else:
            obj = "?"
    return fn or name, obj


def merge(costs, program, inclusive):
    """{(function, object): Ir}. Self costs of one function listed under two
    names add up; inclusive costs do not (callgrind_annotate may list one
    function twice, with an absolute and a relative file name): keep one."""
    out = {}
    for name, v in costs.items():
        key = split_name(name, program)
        out[key] = max(out.get(key, 0), v) if inclusive else out.get(key, 0) + v
    return out


def diff_profile(small, large, n_diff, top, program, inclusive=False):
    """Per-function and per-object cost per item: (large - small) / n_diff."""
    a, b = merge(small, program, inclusive), merge(large, program, inclusive)
    d = {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
    total = sum(d.values())

    def share(v):
        return round(100.0 * v / total, 1) if total else None
    top_rows = [{"function": fn, "object": obj, "instr_per_item": round(v / n_diff, 1),
                 "share_pct": share(v)}
                for (fn, obj), v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]
    by_obj = {}
    for (_, obj), v in d.items():
        by_obj[obj] = by_obj.get(obj, 0) + v
    objs = [{"object": k, "instr_per_item": round(v / n_diff, 1), "share_pct": share(v)}
            for k, v in sorted(by_obj.items(), key=lambda kv: -kv[1]) if v > 0]
    return top_rows, objs


def wrapper(tmp, binary, out_file):
    """A script that execs varseld under callgrind (same PID, so SIGTERM works)."""
    w = Path(tmp) / f"varseld-callgrind-{Path(out_file).stem}"
    w.write_text("#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file="
                 f"{out_file} --error-exitcode=0 {binary} \"$@\"\n")
    w.chmod(w.stat().st_mode | stat.S_IXUSR)
    return w


def run(args, ts):
    for tool in ("valgrind", "callgrind_annotate", "h2load"):
        if not shutil.which(tool):
            raise c.BenchError(f"{tool} is not installed (apt-get install valgrind nghttp2-client)")
    ev_large = max(2, args.events)
    ev_small = ev_large // 2
    c.log("capturing one request of varseld from a recording sandbox")
    req = c.capture_request(args.build, payload=args.payload)
    st = c.Stack(args.build, bench=True, keep=args.keep).start()
    tmp = tempfile.mkdtemp(prefix="cost-", dir=st.tmp)
    runs = {}
    try:
        streams = max(1, min(1000, 2000 // args.connections))
        for label, n_ev in (("small", ev_small), ("large", ev_large)):
            wl = c.Workload(n_ev, args.recipients, payload=args.payload)
            out = Path(tmp) / f"callgrind.varseld.{label}"
            c.log(f"cost: varseld under callgrind, {wl.total:,} notifications")
            v = c.run_varsel(st, wl, connections=args.connections,
                             overrides=c.parse_sets(args.set),
                             binary=wrapper(tmp, (Path(args.build) / "varseld").resolve(), out),
                             timeout=900, sample_interval=0.5, label=f"callgrind {label}")
            v.pop("_rows")
            runs[f"varseld_{label}"] = {"notifications": wl.total, "file": str(out),
                                        "instructions": callgrind_totals(out),
                                        "statuses": v["statuses"]}
            # h2load, same request shape and count
            uris = Path(tmp) / f"uris-{label}.txt"
            port = st.sandbox.ports["apns"]
            with open(uris, "w") as f:
                for tok in wl.pop.tokens[:wl.total]:
                    f.write(f"https://127.0.0.1:{port}/3/device/{tok}\n")
            body = Path(tmp) / "body.json"
            body.write_bytes(req["body"])
            hout = Path(tmp) / f"callgrind.h2load.{label}"
            c.log(f"cost: h2load under callgrind, {wl.total:,} requests")
            rc, text, _ = c.run_tool(["valgrind", "--tool=callgrind",
                                      f"--callgrind-out-file={hout}"]
                                     + h2load_args(req, wl.total, args.connections, streams,
                                                   uris, body), timeout=900)
            if rc != 0 or f"{wl.total} succeeded" not in text:
                raise c.BenchError(f"h2load under callgrind failed (exit {rc}):\n{text[-1200:]}")
            runs[f"h2load_{label}"] = {"requests": wl.total, "file": str(hout),
                                       "instructions": callgrind_totals(hout)}
        n_diff = runs["varseld_large"]["notifications"] - runs["varseld_small"]["notifications"]
        v_marg = (runs["varseld_large"]["instructions"]
                  - runs["varseld_small"]["instructions"]) / n_diff
        h_marg = (runs["h2load_large"]["instructions"]
                  - runs["h2load_small"]["instructions"]) / n_diff
        v_top, v_obj = diff_profile(per_function(runs["varseld_small"]["file"]),
                                    per_function(runs["varseld_large"]["file"]), n_diff,
                                    max(40, args.top), "varseld")
        v_incl, _ = diff_profile(per_function(runs["varseld_small"]["file"], inclusive=True),
                                 per_function(runs["varseld_large"]["file"], inclusive=True),
                                 n_diff, 400, "varseld", inclusive=True)
        v_incl = [r_ for r_ in v_incl if r_["object"] == "varseld"
                  and r_["function"] not in ("main", "uv_run", "(below main)")][:args.top + 5]
        for r_ in v_incl:
            r_["share_pct"] = round(100.0 * r_["instr_per_item"] / v_marg, 1) if v_marg else None
        h_top, h_obj = diff_profile(per_function(runs["h2load_small"]["file"]),
                                    per_function(runs["h2load_large"]["file"]), n_diff, args.top,
                                    "h2load")
        if args.keep:
            keep_dir = c.RESULTS / f"callgrind-{ts}"
            keep_dir.mkdir(parents=True, exist_ok=True)
            for r_ in runs.values():
                shutil.copy(r_["file"], keep_dir)
    finally:
        st.stop()

    result = {
        "workload": {"recipients_per_event": args.recipients, "events": [ev_small, ev_large],
                     "payload": args.payload, "connections": args.connections,
                     "h2load_streams": streams, "body_bytes": len(req["body"])},
        "runs": runs,
        "varseld_instr_per_notification": round(v_marg),
        "varseld_instr_per_notification_incl_startup": round(
            runs["varseld_large"]["instructions"] / runs["varseld_large"]["notifications"]),
        "h2load_instr_per_request": round(h_marg),
        "ratio": round(v_marg / h_marg, 2) if h_marg else None,
        "varseld_top_functions": v_top, "varseld_by_object": v_obj,
        "varseld_top_inclusive": v_incl,
        "h2load_top_functions": h_top, "h2load_by_object": h_obj,
    }
    lines = [
        f"cost (callgrind, marginal between {runs['varseld_small']['notifications']:,} and "
        f"{runs['varseld_large']['notifications']:,} notifications; payload {args.payload}, "
        f"body {len(req['body'])} B):",
        f"  varseld: {v_marg:,.0f} instructions per delivered notification "
        f"({result['varseld_instr_per_notification_incl_startup']:,} with start-up)",
        f"  h2load:  {h_marg:,.0f} instructions per request (same request shape)",
        f"  ratio:   {result['ratio']}×",
        f"  varseld top {args.top} functions (self cost per notification):",
    ]
    for r_ in v_top[:args.top]:
        lines.append(f"    {r_['instr_per_item']:>10,.0f}  {r_['share_pct']:>5.1f}%  "
                     f"{r_['function']}  [{r_['object']}]")
    lines.append("  varseld's own functions, inclusive cost per notification (callees included):")
    for r_ in v_incl:
        lines.append(f"    {r_['instr_per_item']:>10,.0f}  {r_['share_pct']:>5.1f}%  {r_['function']}")
    lines.append("  varseld by shared object (per notification):")
    for r_ in v_obj[:8]:
        lines.append(f"    {r_['instr_per_item']:>10,.0f}  {r_['share_pct']:>5.1f}%  {r_['object']}")
    lines.append(f"  h2load top 5 functions: " + "; ".join(
        f"{r_['function']} {r_['instr_per_item']:,.0f}" for r_ in h_top[:5]))
    return result, lines
