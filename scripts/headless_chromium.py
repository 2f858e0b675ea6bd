"""Headless Chromium for the dashboard screenshots: the flags, and a page that can be clicked before it
is shot (the DevTools protocol over ``--remote-debugging-pipe``: no extra package, no open port).

    with HeadlessPage("/usr/bin/chromium", width=1400, height=600) as page:
        page.open("http://127.0.0.1:5000/#/experiments/1/runs")
        page.click('[data-component-id="..."]')   # waits until the element exists
        page.screenshot(Path("shot.png"))
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

# a fresh profile each time, nothing fetched from outside, no sandbox (root in a container)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
_READ, _WRITE = 3, 4  # the descriptors --remote-debugging-pipe reads commands from and writes replies to


class HeadlessPage:
    """One Chromium tab driven by DevTools protocol commands (JSON messages ended by a NUL byte)."""

    def __init__(self, chromium: str, width: int, height: int) -> None:
        self.chromium, self.width, self.height = chromium, width, height
        self._buffer, self._last_id, self._session = b"", 0, ""

    def __enter__(self) -> HeadlessPage:
        self._profile = tempfile.TemporaryDirectory()
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()

        def pipes_as_3_and_4() -> None:
            os.dup2(commands_read, _READ)
            os.dup2(replies_write, _WRITE)

        self._process = subprocess.Popen(
            [
                self.chromium,
                *FLAGS,
                f"--user-data-dir={self._profile.name}",
                "--remote-debugging-pipe",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],  # fmt: skip
            pass_fds=(_READ, _WRITE),
            preexec_fn=pipes_as_3_and_4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(replies_write)
        tab = next(target for target in self._call("Target.getTargets")["targetInfos"] if target["type"] == "page")
        self._session = self._call("Target.attachToTarget", targetId=tab["targetId"], flatten=True)["sessionId"]
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            with contextlib.suppress(RuntimeError):  # Chromium may close the pipe before it answers
                self._call("Browser.close", session="")
        finally:
            self._process.wait(timeout=30)
            os.close(self._commands)
            os.close(self._replies)
            self._profile.cleanup()

    def open(self, url: str) -> None:
        self._call("Page.navigate", url=url)

    def click(self, selector: str, timeout_s: float = 60.0) -> None:
        """Click the first element matching the CSS ``selector`` once it exists; ``TimeoutError`` if it never does."""
        script = f"(e => e ? (e.click(), true) : false)(document.querySelector({json.dumps(selector)}))"
        deadline = time.monotonic() + timeout_s
        while not self._call("Runtime.evaluate", expression=script, returnByValue=True)["result"].get("value"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no element {selector} on the page after {timeout_s:g} s")
            time.sleep(0.5)

    def screenshot(self, path: Path, settle_s: float = 3.0) -> Path:
        time.sleep(settle_s)  # let what the clicks changed render
        path.write_bytes(base64.b64decode(self._call("Page.captureScreenshot", format="png")["data"]))
        return path

    def _call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command (to the tab unless ``session=""``: the browser) and return its result."""
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        target = self._session if session is None else session
        if target:
            message["sessionId"] = target
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._replies, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed its DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._last_id:  # events and other replies are not waited for
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
