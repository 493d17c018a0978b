#!/usr/bin/env python3
"""Run varsel's integration tests.

    python3 tests/integration/run.py [--build DIR] [-k PATTERN] [--long]
                                     [--timeout S] [--keep] [--list]

Discovers `def test_NAME(ctx)` functions in tests/integration/test_*.py
(module order, then definition order). A function with the attribute
`long = True` (set with the @long_test decorator) runs only with --long;
a `timeout = S` attribute overrides the default per-test timeout.

Each test gets a harness.Ctx: its own temp dir under one run directory and
the binaries from --build. Whatever it started is stopped by PID when it
ends, passed or failed. On failure the reason, the temp dir (kept) and the
tail of every log are printed. Prints `ok NAME` / `FAIL NAME` and ends
with `N passed, N failed`; exits 1 if anything failed or nothing ran.
"""

import argparse
import importlib.util
import inspect
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402


class TestTimeout(Exception):
    pass


def discover(pattern, include_long):
    tests = []
    for path in sorted(HERE.glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        fns = [(name, fn) for name, fn in vars(mod).items()
               if name.startswith("test_") and inspect.isfunction(fn)
               and fn.__module__ == mod.__name__]
        fns.sort(key=lambda nf: nf[1].__code__.co_firstlineno)
        for name, fn in fns:
            full = f"{path.stem}.{name}"
            if getattr(fn, "long", False) and not include_long:
                continue
            if pattern and not re.search(pattern, full):
                continue
            tests.append((full, name, fn))
    return tests


def _alarm(signum, frame):
    raise TestTimeout()


def run_one(full, name, fn, build, root, timeout, keep):
    ctx = harness.Ctx(name, build, root)
    t0 = time.monotonic()
    error = None
    limit = int(getattr(fn, "timeout", timeout))
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit)
    try:
        fn(ctx)
    except TestTimeout:
        error = f"timed out after {limit}s\n" + "".join(
            traceback.format_tb(sys.exc_info()[2])[-3:])
    except harness.TestFailure as e:
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb)
                      if Path(f.filename).name.startswith("test_")), "")
        error = f"{e} ({where})" if where else str(e)
    except Exception:  # noqa: BLE001 - any error fails the test
        error = traceback.format_exc()
    finally:
        signal.alarm(0)
    try:
        problems = ctx.cleanup()
    except Exception:  # noqa: BLE001
        problems = [traceback.format_exc()]
    reports = ctx.sanitizer_reports()
    if reports:
        problems.append("sanitizer reports:\n      " + "\n      ".join(reports[:20]))
    if error is None and problems:
        error = "; ".join(problems)
    elif problems:
        error += "\n  also: " + "; ".join(problems)
    dt = time.monotonic() - t0
    if error is None:
        print(f"ok   {full} ({dt:.1f}s)")
        for n in ctx.notes:
            print(f"     {n}")
        if not keep:
            ctx.remove_tmp()
        return True
    print(f"FAIL {full} ({dt:.1f}s)")
    for line in str(error).rstrip().splitlines():
        print(f"  {line}")
    for n in ctx.notes:
        print(f"  note: {n}")
    print(f"  files kept in {ctx.tmp}")
    for label, path in ctx.logs():
        lines = harness.tail(path, 8 if label == "redis" else 30)
        if not lines:
            continue
        print(f"  --- last {len(lines)} lines of {label} log ({path})")
        for line in lines:
            print(f"  | {line}")
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.environ.get("VARSEL_BUILD", "build"),
                    help="directory with varseld and varsel-sandbox (default build)")
    ap.add_argument("-k", dest="pattern", help="run tests whose name matches this regex")
    ap.add_argument("--long", action="store_true", help="include long tests")
    ap.add_argument("--timeout", type=int, default=120, help="per-test timeout (s)")
    ap.add_argument("--keep", action="store_true", help="keep temp dirs of passed tests")
    ap.add_argument("--list", action="store_true", help="list the tests and exit")
    args = ap.parse_args()

    build = Path(args.build)
    if not build.is_absolute():
        build = (harness.REPO / build).resolve() if not build.exists() else build.resolve()
    tests = discover(args.pattern, args.long)
    if args.list:
        for full, _, _ in tests:
            print(full)
        return 0

    root = Path(tempfile.mkdtemp(prefix="varsel-it-"))
    print(f"integration: {len(tests)} tests, binaries from {build}, files in {root}")
    sys.stdout.flush()
    passed = failed = 0
    for full, name, fn in tests:
        if run_one(full, name, fn, build, root, args.timeout, args.keep):
            passed += 1
        else:
            failed += 1
        sys.stdout.flush()
    harness.stop_all_processes()
    if failed == 0 and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
