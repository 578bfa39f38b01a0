"""Screenshots of the web page: measuring an example image, then reviewing it.

Usage: .venv/bin/python scripts/screenshot_web.py [--out docs/web.png] [--review docs/review.png]

Starts the app with the shipped weights on a free loopback port, opens it in
Debian's Chromium through Playwright, measures ``examples/191_HC.png`` and saves
a full-page screenshot; then drags the first axis handle outwards, enters an
operator, accepts, and saves the review screenshot (an edited ellipse).
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from browser import drag_axis_handle  # shared with the page tests
from fetalhead.predict import HeadMeasurer
from fetalhead.serve import create_app

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/web.png"))
    ap.add_argument("--image", type=Path, default=Path("examples/191_HC.png"))
    ap.add_argument("--pixel-size", default="0.157119035721")
    ap.add_argument("--review", type=Path, default=Path("docs/review.png"))
    args = ap.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(HeadMeasurer.from_pretrained())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 950})
        page.goto(f"http://127.0.0.1:{port}/")
        page.set_input_files("#file", str(args.image))
        page.fill("#pixel", args.pixel_size)
        page.click("#measure")
        page.wait_for_selector("#hc-value", timeout=60000)
        page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        print(f"HC shown: {page.text_content('#hc-value')}; saved {args.out}")
        drag_axis_handle(page, 25)
        page.fill("#operator", "sonographer A")
        page.click("#accept")
        page.wait_for_selector("text=accepted by sonographer A")
        page.screenshot(path=str(args.review), full_page=True)
        print(f"edited HC: {page.text_content('#hc-value')}; saved {args.review}")
        browser.close()
    server.should_exit = True


if __name__ == "__main__":
    main()
