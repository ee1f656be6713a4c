"""Screenshots of a running dashboard for docs/review.md and the README (real pages, real data).

    .venv/bin/python scripts/screenshots.py URL USER PASSWORD OUT_DIR

Run against `make demo`'s dashboard (it prints URL, user and password). Drives Debian's chromium
(/usr/bin/chromium) through Playwright; never `playwright install`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright


def main(url: str, user: str, password: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 720})
        page.goto(url.rstrip("/") + "/login")
        page.fill("input[name=user]", user)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_selector("#ranking tbody tr svg.spark polyline", state="attached")  # a flat line has no height
        page.wait_for_selector("#queue li")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "dashboard.png"))
        page.click("#queue li:has(.kind.alert) .stream")
        page.wait_for_selector("img.evidence.full")
        page.locator("img.evidence.full").first.click()
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / "review-item.png"), full_page=True)
        browser.close()
    print(f"wrote {out / 'dashboard.png'} and {out / 'review-item.png'}")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]))
