"""A headless Chromium driven over the DevTools protocol (CDP), for the report's page test.

`find_browser()` looks for Debian's `chromium-headless-shell` (what `.ci/run` installs), then
other Chromium builds; `CF_REPORT_BROWSER` names one explicitly. `load_page` opens a page with
the network cut (a proxy on a closed port, every host unresolvable), waits for its load event,
and returns what a user's browser would have done: every request it made, every console
message and script error, the result of a DOM probe, and a full-page screenshot. The protocol
client is aiohttp's WebSocket client (already a dependency), a few lines over the raw messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    """Return the path of a headless-capable Chromium, or None."""
    named = os.environ.get("CF_REPORT_BROWSER")
    if named:
        return shutil.which(named)
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


@dataclass
class PageLoad:
    """What loading one page did."""

    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)  # messages of level error or warning
    errors: list[str] = field(default_factory=list)  # uncaught script exceptions
    probe: Any = None
    screenshot: bytes = b""


class _Session:
    """One CDP connection to a page target: commands by id, events collected on the side."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.loaded = asyncio.Event()

    async def pump(self) -> None:
        async for message in self._ws:
            data = message.json()
            if "id" in data:
                future = self._pending.pop(data["id"])
                if "error" in data:
                    future.set_exception(RuntimeError(str(data["error"])))
                else:
                    future.set_result(data.get("result", {}))
            else:
                self.events.append((data["method"], data.get("params", {})))
                if data["method"] == "Page.loadEventFired":
                    self.loaded.set()

    async def send(self, method: str, **params: Any) -> Any:
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send_json({"id": ident, "method": method, "params": params})
        return await asyncio.wait_for(future, 30)


@contextlib.asynccontextmanager
async def _browser(binary: str, width: int, height: int) -> AsyncIterator[int]:
    """Start Chromium with the network cut; yield its DevTools port."""
    with tempfile.TemporaryDirectory(prefix="cf-report-browser-") as profile:
        process = await asyncio.create_subprocess_exec(
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}",
            "--proxy-server=127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--window-size={width},{height}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            for _ in range(300):
                if port_file.exists() and port_file.read_text().strip():
                    break
                await asyncio.sleep(0.05)
            yield int(port_file.read_text().split()[0])
        finally:
            process.terminate()
            await process.wait()


async def load_page(
    binary: str, url: str, probe: str, *, width: int = 1280, height: int = 900
) -> PageLoad:
    """Open `url`, wait for its load event, evaluate `probe` (a JS expression) and screenshot."""
    result = PageLoad()
    async with _browser(binary, width, height) as port, aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as reply:
            targets = await reply.json()
        page = next(t for t in targets if t.get("type") == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            session = _Session(ws)
            pump = asyncio.create_task(session.pump())
            for domain in ("Page", "Runtime", "Log", "Network"):
                await session.send(f"{domain}.enable")
            await session.send("Page.navigate", url=url)
            await asyncio.wait_for(session.loaded.wait(), 30)
            evaluated = await session.send("Runtime.evaluate", expression=probe, returnByValue=True)
            result.probe = evaluated.get("result", {}).get("value")
            shot = await session.send(
                "Page.captureScreenshot", format="png", captureBeyondViewport=True
            )
            result.screenshot = base64.b64decode(shot["data"])
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
    for method, params in session.events:
        if method == "Network.requestWillBeSent":
            result.requests.append(str(params["request"]["url"]))
        elif method == "Runtime.exceptionThrown":
            result.errors.append(str(params["exceptionDetails"].get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning"):
            result.console.append(str(params.get("args")))
        elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
            result.console.append(str(params["entry"].get("text")))
    return result
