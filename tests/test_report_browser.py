"""The report's interactive viewer in a real headless browser (Chromium).

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``:
JSON messages ending in NUL on file descriptors 3 and 4), so the test needs no Python package
beyond the standard library, numpy and Pillow. It is skipped, saying why, when no Chromium is
installed (Debian: ``apt-get install chromium``; CI installs it); ``BRAINPRED_CHROMIUM`` names
another binary.
"""

import base64
import fcntl
import io as _io
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from factories import config

from brainpred import figures, io
from brainpred.stages import report as stage_report

CHROMIUM = (os.environ.get("BRAINPRED_CHROMIUM") or shutil.which("chromium")
            or shutil.which("chromium-browser") or shutil.which("google-chrome"))
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH (apt-get install chromium, or set "
                             "BRAINPRED_CHROMIUM): the headless-browser check of the report "
                             "viewer is skipped")

TIMEOUT = 20.0


class Chromium:
    """A headless Chromium with one page, driven over the DevTools pipe."""

    def __init__(self, profile):
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()
        # the browser reads commands on fd 3 and writes replies on fd 4: a small Python
        # trampoline puts the pipe ends there (copied above 9 first, so none overwrites another)
        fds = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child, from_child)]
        for fd in (to_child, from_child):
            os.close(fd)
        to_child, from_child = fds
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--disable-dev-shm-usage", "--remote-debugging-pipe",
                f"--user-data-dir={profile}", "about:blank"]
        trampoline = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
                      "os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", trampoline, str(to_child), str(from_child), CHROMIUM, *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=fds)
        os.close(to_child)
        os.close(from_child)
        self.messages = queue.Queue()
        self.events = []
        self._id = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.send(f"{domain}.enable", session=self.session)
        self.send("Emulation.setDeviceMetricsOverride", session=self.session, width=1000,
                  height=1200, deviceScaleFactor=1, mobile=False)

    def _read(self):
        buf = b""
        while True:
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                return
            buf += chunk
            *done, buf = buf.split(b"\0")
            for msg in done:
                self.messages.put(json.loads(msg))

    def send(self, method, session=None, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if reply.get("id") == self._id:
                assert "error" not in reply, (method, reply["error"])
                return reply["result"]
            self.events.append(reply)

    def page(self, method, **params):
        return self.send(method, session=self.session, **params)

    def load(self, url):
        """Open ``url`` and wait for its load event."""
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        self.page("Page.navigate", url=url)
        deadline = time.monotonic() + TIMEOUT
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self.messages.get(timeout=max(0.01,
                                                             deadline - time.monotonic())))

    def evaluate(self, expression):
        out = self.page("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        assert "exceptionDetails" not in out, out["exceptionDetails"]
        return out["result"].get("value")

    def wait_for(self, expression):
        deadline = time.monotonic() + TIMEOUT
        while not self.evaluate(expression):
            assert time.monotonic() < deadline, (f"timed out waiting for {expression}; "
                                                 f"page errors: {self.errors()}")
            time.sleep(0.05)

    def screenshot(self, selector):
        """The element's pixels, (h, w, 3) uint8."""
        from PIL import Image

        rect = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
            "e.scrollIntoView(); const r = e.getBoundingClientRect(); "
            "return [r.left + scrollX, r.top + scrollY, r.width, r.height]; })()")
        clip = dict(zip(("x", "y", "width", "height"), rect), scale=1)
        data = self.page("Page.captureScreenshot", format="png", clip=clip,
                         captureBeyondViewport=True)["data"]
        return np.asarray(Image.open(_io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def errors(self):
        """Console errors, uncaught exceptions and error log entries so far."""
        while not self.messages.empty():
            self.events.append(self.messages.get())
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                out.append(p["exceptionDetails"].get("exception", {}).get("description")
                           or p["exceptionDetails"].get("text"))
            elif e.get("method") == "Runtime.consoleAPICalled" and p["type"] in ("error",
                                                                                 "assert"):
                out.append(" ".join(str(a.get("value", a.get("description")))
                                    for a in p["args"]))
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(p["entry"]["text"])
        return out

    def requests(self):
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def close(self):
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - the browser may close before replying
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        self._reader.join(timeout=5)
        if not self._reader.is_alive():
            os.close(self._r)


def _group(path):
    """Group maps with spatial structure on the fsaverage5 mesh: R(X) rises from posterior to
    anterior, F(d) moves along the same axis with d, d* is half masked; medial-wall NaN."""
    mesh = figures.fsaverage5_mesh()
    y = np.concatenate([mesh[h][0][:, 1] for h in ("left", "right")])
    y = (y - y.min()) / (y.max() - y.min())
    distances = np.array([0, 5, 10, 20])
    brain = (0.05 + 0.25 * y).astype(np.float64)
    brain[:1500] = np.nan
    forecast = np.stack([0.1 * np.exp(-((y - d / 20) / 0.15) ** 2) for d in distances])
    dstar = distances[np.argmax(forecast, axis=0)].astype(float)
    dstar[::2] = np.nan
    io.save_npz(path, brain_score=brain, forecast_score=forecast, dstar=dstar,
                distances=distances, subjects=np.array(["sub-001", "sub-002"]))
    return path


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    from PIL import Image

    out = tmp_path_factory.mktemp("browser")
    png = out / "fig.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(png)
    cfg = config(dataset={"source": "synthetic", "root": str(out / "none")})
    html = out / "report.html"
    stage_report.make_report([png], ["A figure"], cfg, html, group_npz=_group(out / "g.npz"))
    return html


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Chromium(tmp_path_factory.mktemp("profile"))
    yield b
    b.close()


def _coloured(pixels):
    """Fraction of pixels that are neither white background nor grey (a map's colours)."""
    p = pixels.astype(int)
    return float(np.mean(p.max(axis=2) - p.min(axis=2) > 40))


def test_report_viewer_loads_renders_and_switches_maps(report_page, browser):
    t0 = time.monotonic()
    browser.load(report_page.as_uri())
    browser.wait_for("document.getElementById('bpv').dataset.ready === '1'")
    brain = browser.screenshot("#bpv canvas.bpv-view")
    assert brain.shape[0] > 300 and brain.shape[1] > 400
    background = np.all(brain > 245, axis=2)
    assert 0.2 < 1 - background.mean() < 0.9, "the map view is blank or fills everything"
    assert brain.std() > 30 and _coloured(brain) > 0.1

    # F(d): the distance slider moves the map (a real input event on the slider)
    browser.evaluate("document.querySelector('.bpv-map').value = 'forecast'; "
                     "document.querySelector('.bpv-map').dispatchEvent(new Event('change'))")
    assert browser.evaluate("getComputedStyle(document.querySelector('.bpv-stepbox'))"
                            ".visibility") == "visible"
    shots = []
    for step in range(4):
        browser.evaluate(f"{{ const s = document.querySelector('.bpv-step'); s.value = {step}; "
                         "s.dispatchEvent(new Event('input')); } 0")
        assert browser.evaluate("document.querySelector('.bpv-step-value').textContent") == \
            f"d = {[0, 5, 10, 20][step]}"
        shots.append(browser.screenshot("#bpv canvas.bpv-view").astype(int))
    assert all(np.abs(a - b).mean() > 1 for a, b in zip(shots, shots[1:]))

    # d*, then a drag rotates the view
    browser.evaluate("brainpredViewer.show('dstar'); 0")
    before = browser.screenshot("#bpv canvas.bpv-view").astype(int)
    assert _coloured(before) > 0.02
    rect = browser.evaluate("(() => { const r = document.querySelector('#bpv canvas.bpv-view')"
                            ".getBoundingClientRect(); return [r.left, r.top]; })()")
    x, y = rect[0] + 200, rect[1] + 150
    for kind, dx in (("mousePressed", 0), ("mouseMoved", 60), ("mouseReleased", 60)):
        browser.page("Input.dispatchMouseEvent", type=kind, x=x + dx, y=y, button="left",
                     buttons=0 if kind == "mouseReleased" else 1, clickCount=1)
    browser.wait_for("brainpredViewer.state.daz !== 0")
    browser.evaluate("brainpredViewer.render(); 0")
    after = browser.screenshot("#bpv canvas.bpv-view").astype(int)
    assert np.abs(after - before).mean() > 1

    # the value under the pointer; a threshold above every value leaves the sulcal background
    browser.page("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y, buttons=0)
    browser.wait_for("document.querySelector('.bpv-hover').textContent !== ''")
    assert browser.evaluate("document.querySelector('.bpv-hover').textContent").startswith(
        "Left hemisphere, vertex ")
    browser.evaluate("brainpredViewer.show('brain'); { const t = document.querySelector("
                     "'.bpv-thr'); t.value = 10; t.dispatchEvent(new Event('input')); } 0")
    hidden = browser.screenshot("#bpv canvas.bpv-view")
    assert _coloured(hidden) < 0.01 and np.mean(np.all(hidden > 245, axis=2)) < 0.8

    assert browser.errors() == []
    external = [u for u in browser.requests() if not u.startswith(("file:", "data:", "about:"))]
    assert external == []
    assert time.monotonic() - t0 < 20
