"""Drive the playground in a headless Chromium: the helpers of its browser test, and the
screenshot in the docs.

    python -m toy.playground.screenshot docs/img/playground.png

Playwright (``pip install 'modeseek[dev]'``) drives the system's Chromium (Debian's
``chromium``, or ``MODESEEK_CHROMIUM=/path/to/chrome``); Playwright's own browser download is
not used. The page is served in this process on a free port of 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NO_BROWSER = (
    "no Chromium found: install Debian's chromium (`make browser`, or apt-get install "
    "chromium) or set MODESEEK_CHROMIUM=/path/to/chrome"
)
DONE = "#run-ok, #run-error, #run-stopped"


def find_chromium() -> str | None:
    """``MODESEEK_CHROMIUM``, else the first of ``BROWSERS`` on PATH (None: none found)."""
    if os.environ.get("MODESEEK_CHROMIUM"):
        return os.environ["MODESEEK_CHROMIUM"]
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(port: int | None = None) -> Iterator[str]:
    """The playground served from this process (a server thread); yields its URL."""
    from toy.playground.app import launch

    port = port or free_port()
    demo = launch(port=port, open_browser=False, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@contextlib.contextmanager
def page_at(url: str, width: int = 1440, height: int = 1000) -> Iterator[object]:
    """A Playwright page of headless Chromium at ``url``, once the page's Run button is there.
    ``RuntimeError(NO_BROWSER)`` without a Chromium."""
    from playwright.sync_api import sync_playwright

    exe = find_chromium()
    if exe is None:
        raise RuntimeError(NO_BROWSER)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.locator("#run").wait_for()
            page.locator("#plot-dist img").wait_for()
            yield page
        finally:
            browser.close()


def field(page, elem_id: str):
    """The input element of the control ``elem_id`` (a number, text or dropdown field)."""
    return page.locator(f"#{elem_id}").locator("input, textarea").first


def set_value(page, elem_id: str, value: object) -> None:
    """Type ``value`` into a number or text control, then leave it (its change fires)."""
    box = field(page, elem_id)
    box.fill(str(value))
    box.press("Tab")


def choose(page, elem_id: str, text: str) -> None:
    """Pick the option whose label contains ``text`` in the dropdown ``elem_id``."""
    box = field(page, elem_id)
    box.click()
    box.fill(text)
    page.locator("ul[role='listbox'] li", has_text=text).first.click()


def serial(page) -> str | None:
    """The status line's run counter (changes with every finished request)."""
    node = page.locator(DONE)
    return node.first.get_attribute("data-serial") if node.count() else None


def run_and_wait(page, timeout_s: float = 120) -> str:
    """Click Run, wait until the page shows this run's outcome; returns the status element's
    id (``run-ok``, ``run-error`` or ``run-stopped``)."""
    before = serial(page)
    page.locator("#run").click()
    page.wait_for_function(
        """([sel, before]) => { const n = document.querySelector(sel);
             return n && n.getAttribute('data-serial') !== before; }""",
        arg=[DONE, before],
        timeout=timeout_s * 1000,
    )
    return page.locator(DONE).first.get_attribute("id")


def plot_image(page, elem_id: str) -> str | None:
    """The ``src`` of a plot's image (a data: URL of the PNG)."""
    img = page.locator(f"#{elem_id} img")
    return img.first.get_attribute("src") if img.count() else None


def take(path: str | Path) -> Path:
    """Screenshot of the page after a run comparing the start configs (A: on-policy DPO, B:
    offline best-of-N) at ``path`` (PNG)."""
    path = Path(path)
    with serve() as url, page_at(url, height=1100) as page:
        page.locator("#compare input").check()
        outcome = run_and_wait(page)
        if outcome != "run-ok":
            raise RuntimeError(f"the run did not finish: {page.locator(DONE).first.inner_text()}")
        page.wait_for_timeout(500)
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m toy.playground.screenshot PATH.png", file=sys.stderr)
        return 2
    try:
        print(take(args[0]))
    except (RuntimeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
