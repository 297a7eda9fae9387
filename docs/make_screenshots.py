"""Make docs/screenshots/evidence.png and timeline.png from synthetic data.

Run from the repository root: `.venv/bin/python docs/make_screenshots.py`.

Builds a throw-away database with synthetic pump histories through the real
import pipeline, serves the web view on a free local port, logs in with headless
Chromium (Debian's `/usr/bin/chromium` through Selenium and `/usr/bin/chromedriver`)
and saves full-page screenshots of one session's evidence and of its pump's
timeline. Everything shown is synthetic.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

from tests.web.support import (  # noqa: E402
    PASSWORD,
    LiveServer,
    add_account,
    build_database,
    chromium,
    chromium_missing,
)
from web.app import create_app  # noqa: E402
from web.context import WebConfig  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
WIDTH = 1360


def full_page(driver: object, path: Path) -> None:
    """Resize the window to the page's height, then take the screenshot."""
    height = driver.execute_script(  # type: ignore[attr-defined]
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
    )
    driver.set_window_size(WIDTH, int(height) + 40)  # type: ignore[attr-defined]
    time.sleep(0.3)
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]


def main() -> int:
    reason = chromium_missing()
    if reason:
        print(f"cannot make screenshots: {reason}", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pumptrail-shots-") as tmp:
        data = build_database(Path(tmp) / "data", seeds=(7,), visits=8)
        add_account(data.url, "coder.demo", "coder")
        app = create_app(
            WebConfig.for_database(
                data.url, data_dir=data.root, sync_codes_seconds=0, version="demo"
            )
        )
        serial, sessions = next(iter(data.pumps.items()))
        # The last visit: a refill and a dose change, evidence under every profile.
        session_id = sessions[-1]
        with LiveServer(app) as server, chromium(Path(tmp) / "downloads", width=WIDTH) as driver:
            driver.get(server.url + "/login")
            driver.find_element(By.ID, "username").send_keys("coder.demo")
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            driver.find_element(By.ID, "login-submit").click()
            WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "logout"))
            driver.get(f"{server.url}/sessions/{session_id}")
            full_page(driver, OUT / "evidence.png")
            driver.set_window_size(WIDTH, 900)
            driver.get(f"{server.url}/pumps/{serial}")
            full_page(driver, OUT / "timeline.png")
    for name in ("evidence.png", "timeline.png"):
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
