"""Shared by the web tests, the screenshot script and the benchmark.

- `build_database`: a SQLite database and raw store filled by the real import
  pipeline with synthetic pump histories (`fixtures.scenarios.pump_history`,
  written by `fixtures.binary_writer.encode_binary`, some also as CSV);
- `add_account`: a web account;
- `served_routes`: every route an app serves, routers included (for the
  route walks of the login and CSRF tests);
- `LiveServer`: uvicorn serving the app on a free 127.0.0.1 port in a thread;
- `chromium`: Debian's headless Chromium through Selenium and
  `/usr/bin/chromedriver` (never a downloaded browser), or the reason it cannot run.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from db.engine import write_transaction
from db.migrate import open_database
from evidence import load_rules
from fixtures.binary_writer import encode_binary
from fixtures.csv_writer import encode_csv
from fixtures.scenarios import pump_history
from ingest.pipeline import Importer
from ingest.rawstore import RawStore
from web.users import add_user

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PASSWORD = "synthetic-pass-123"


@dataclass
class DemoData:
    root: Path
    url: str
    raw_store: Path
    # session IDs in import order, and per pump serial in chain order
    session_ids: list[str] = field(default_factory=list)
    pumps: dict[str, list[str]] = field(default_factory=dict)


def build_database(
    root: Path, *, seeds: tuple[int, ...] = (11, 12, 13), visits: int = 6, csv_every: int = 3
) -> DemoData:
    """Import synthetic pump histories through the real pipeline into `root`."""
    root.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{root / 'pumptrail.db'}"
    data = DemoData(root=root, url=url, raw_store=root / "raw")
    engine = open_database(url)
    try:
        importer = Importer(engine, RawStore(data.raw_store, durable=False), load_rules())
        for seed in seeds:
            scenarios = list(pump_history(random.Random(seed), visits=visits))
            for index, scenario in enumerate(scenarios):
                result = importer.import_bytes(encode_binary(scenario), name=f"{scenario.name}.psl")
                if result.outcome != "imported" or result.session_id is None:
                    raise RuntimeError(f"fixture import failed: {result.detail}")
                data.session_ids.append(result.session_id)
                serial = scenario.header.pump_serial
                data.pumps.setdefault(serial, []).append(result.session_id)
                if csv_every and index % csv_every == csv_every - 1:
                    importer.import_bytes(encode_csv(scenario), name=f"{scenario.name}.csv")
    finally:
        engine.dispose()
    return data


def add_account(url: str, name: str, role: str, password: str = PASSWORD) -> None:
    engine = open_database(url)
    try:
        with write_transaction(engine) as connection:
            add_user(connection, name, role, password)
    finally:
        engine.dispose()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    if found is None:
        raise AssertionError("no csrf_token field in the page")
    return found.group(1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LiveServer:
    """uvicorn in a thread on 127.0.0.1 and a free port; `with` starts and stops it."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file() or not os.access(path, os.X_OK):
            return f"{path} is missing (Debian packages chromium and chromium-driver)"
    return None


@contextmanager
def chromium(download_dir: Path, *, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium WebDriver downloading into `download_dir`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="pumptrail-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(download_dir),
            "download.prompt_for_download": False,
            "download.directory_upgrade": True,
            "safebrowsing.enabled": False,
            "plugins.always_open_pdf_externally": True,
        },
    )
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        # Headless Chromium needs downloads allowed explicitly (DevTools command).
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior",
            {"behavior": "allow", "downloadPath": str(download_dir)},
        )
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def served_routes(app: FastAPI) -> list[tuple[str, APIRoute]]:
    """(full path, route) of every endpoint route the app serves, routers included.

    FastAPI may keep an included router as one entry of `app.routes` (an
    included-router node holding the original router and the prefix): the walk
    goes into it, so a page added to any router of the app is found.
    """

    def walk(routes: Iterable[BaseRoute], prefix: str) -> Iterator[tuple[str, APIRoute]]:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                context = getattr(route, "include_context", None)
                yield from walk(inner.routes, prefix + str(getattr(context, "prefix", "")))
            elif isinstance(route, APIRoute):
                yield prefix + route.path, route

    return list(walk(app.routes, ""))
