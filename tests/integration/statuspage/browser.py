"""Headless Chromium for the status page test (Python standard library only).

Debian's `chromium` package renders the page: `--virtual-time-budget` lets
the page's timers run (it polls /v1/stats every 2 s, so a budget of 7 s
gives it four polls in well under a second of real time; network fetches
are real and virtual time waits for them), then `--dump-dom` prints the
DOM as it stands and `--screenshot` saves a PNG.

Each run gets its own --user-data-dir and its own process group, and the
whole group is killed by its id when the run ends (Chromium leaves helper
processes otherwise). Use `Chromium(ctx)` so a test's clean-up stops a run
that is still going.
"""

import os
import shutil
import signal
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--disable-extensions", "--hide-scrollbars", "--mute-audio",
         "--no-default-browser-check", "--password-store=basic"]


def find_chromium():
    """Path of a Chromium binary, or None."""
    for name in CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


class BrowserError(Exception):
    pass


class Chromium:
    """Runs headless Chromium; registers itself with |ctx| for clean-up."""

    def __init__(self, ctx=None, binary=None, workdir=None):
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise BrowserError("chromium not found: install Debian's 'chromium' package "
                               "(apt-get install chromium)")
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="chromium-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / "chromium.log"
        self.proc = None
        self.runs = 0
        if ctx is not None:
            ctx.procs.append(self)

    def _run(self, extra, url, budget_ms, timeout, window):
        self.runs += 1
        profile = self.workdir / f"profile-{self.runs}"
        args = [self.binary] + FLAGS + [
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={int(budget_ms)}",
            f"--window-size={window[0]},{window[1]}"] + extra + [url]
        with open(self.log, "ab") as logf:
            logf.write(("$ " + " ".join(args) + "\n").encode())
            logf.flush()
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=logf,
                                         start_new_session=True)
            try:
                out, _ = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.stop()
                raise BrowserError(f"chromium did not finish within {timeout}s; "
                                   f"log: {self.log}")
            finally:
                self._kill_group()
        rc = self.proc.returncode
        self.proc = None
        if rc != 0:
            raise BrowserError(f"chromium exited {rc}; log: {self.log}")
        return out.decode("utf-8", "replace")

    def dump_dom(self, url, budget_ms=7000, timeout=90, window=(1280, 1000)):
        """The page's DOM after |budget_ms| of virtual time, as HTML text."""
        return self._run(["--dump-dom"], url, budget_ms, timeout, window)

    def screenshot(self, url, path, budget_ms=7000, timeout=90, window=(1280, 1000)):
        """Save a PNG of the page after |budget_ms| of virtual time."""
        path = Path(path)
        self._run([f"--screenshot={path}"], url, budget_ms, timeout, window)
        if not path.exists() or path.stat().st_size == 0:
            raise BrowserError(f"chromium wrote no screenshot at {path}")
        return path

    def _kill_group(self):
        """Kill what is left of the process group we started (by its id)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    # harness.Ctx clean-up protocol
    def stop(self, timeout=5.0):
        if self.proc is not None:
            self._kill_group()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        return 0

    def logs(self):
        return [("chromium", self.log)]


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
         "source", "track", "wbr"}


class _Numbers(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found = {}
        self._stack = []

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            return
        a = dict(attrs)
        if "id" in a and any(k.startswith("data-") for k in a):
            self.found[a["id"]] = {"attrs": a, "text": ""}
            self._stack.append(a["id"])
        else:
            self._stack.append(None)

    def handle_endtag(self, tag):
        if tag not in _VOID and self._stack:
            self._stack.pop()

    def handle_data(self, data):
        for ident in self._stack:
            if ident is not None:
                self.found[ident]["text"] += data


def page_numbers(html):
    """{id: {"attrs": {...}, "text": "..."}} for every element with an id
    and a data-* attribute (the page's numbers and its sample marker)."""
    p = _Numbers()
    p.feed(html)
    return p.found
