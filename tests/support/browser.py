"""Headless Chromium from Debian's `chromium` package, driven by Playwright for Python.

Playwright launches /usr/bin/chromium (`executable_path`) and never downloads a browser.
Every request the page makes to a host other than 127.0.0.1 is aborted: the tests talk to
loopback only (the Prefect UI would otherwise fetch its analytics configuration).
`Evidence` keeps screenshots of a test's steps and, when the test fails, a last screenshot
and the page's HTML, and names their directory (and the API calls of the page that failed)
in the failure message. `submit` presses a form's button as a person does: again when the
server answered that it is busy.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
# Known to work as root in this container (no sandbox, no GPU, nothing phoning home).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK = re.compile(r"^(https?|wss?)://127\.0\.0\.1(:\d+)?/")


def require_chromium() -> str:
    """Chromium's path; skips the calling test without it (fails it under CI, ``CI`` set)."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = "Chromium not found (install Debian's 'chromium' package: scripts/bootstrap.sh)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def chromium_context(viewport: tuple[int, int] = (1400, 1600)) -> Iterator[Any]:
    """A browser context on a fresh profile; closed, and its profile removed, after."""
    from playwright.sync_api import sync_playwright

    executable = require_chromium()
    profile = tempfile.mkdtemp(prefix="canary-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                headless=True,
                args=FLAGS,
                viewport={"width": viewport[0], "height": viewport[1]},
            )
            context.route("**/*", _loopback_only)
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _loopback_only(route: Any) -> None:
    if LOOPBACK.match(route.request.url) or route.request.url.startswith(("data:", "blob:")):
        route.continue_()
    else:
        route.abort()


# What Prefect's own clients retry: the server's SQLite busy (503), overload. The UI does
# not; it shows an error, and a person presses the button again.
RETRIED = {429, 502, 503}


def submit(page: Any, button: Any, path: re.Pattern[str], attempts: int = 3) -> Any:
    """Press `button` of a form that POSTs to the API path `path`; the answer it got.

    Pressed again, as a person would, while the server answers "busy"; any other answer
    ends it (the caller checks it).
    """
    for _ in range(attempts):
        with page.expect_response(
            lambda r: r.request.method == "POST" and path.search(urlsplit(r.url).path),
            timeout=90_000,
        ) as answered:
            button.click()
        if answered.value.status not in RETRIED:
            return answered.value
    return answered.value


class Evidence:
    """Screenshots of one test, in a directory of their own, and the API calls that failed."""

    def __init__(self, page: Any, directory: Path) -> None:
        self.page = page
        self.directory = directory
        self.failed = False
        self._count = 0
        self.refused: list[str] = []  # API calls the page made that did not succeed
        page.on("response", self._note)

    def _note(self, response: Any) -> None:
        if "/api/" in response.url and response.status >= 400:
            self.refused.append(f"{response.status} {response.request.method} {response.url}")

    def shot(self, name: str) -> Path:
        self._count += 1
        path = self.directory / f"{self._count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    @contextlib.contextmanager
    def on_failure(self) -> Iterator[Evidence]:
        """Re-raises an assertion with a last screenshot and the page's HTML named in it."""
        try:
            yield self
        except Exception as exc:
            self.failed = True
            try:
                self.shot("failure")
                (self.directory / "failure.html").write_text(self.page.content())
            except Exception as saving:  # the page may be gone; the failure still counts
                note = f"(no screenshot: {saving})"
            else:
                note = f"screenshots and the page's HTML in {self.directory}"
            if self.refused:
                note += "\nAPI calls of the page that failed: " + "; ".join(self.refused[-10:])
            raise AssertionError(f"{exc}\n{note}") from exc
