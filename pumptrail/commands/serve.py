"""`pumptrail serve [--host H] [--port P] [--workers N]`: the coder and auditor web view.

Serves `web.create_app` with uvicorn on `host`:`port` (settings; default
127.0.0.1:8300, local only: put a TLS reverse proxy in front to reach it from
other machines, and pass `--proxy-headers` so cookies are marked Secure). The
database is opened (an empty one is set up), the signing secret is read from
`<data_dir>/web-secret` (created 0600 on first run). uvicorn's access log is off:
the app writes its own (`pumptrail.web.access`), naming route templates, never
concrete paths or query strings, which may carry a patient ID. The app gets
its settings as a typed `web.context.WebConfig` built here (`web_config`).

`--workers N` (N > 1) runs N uvicorn worker processes on the one port. Each
builds its own app with `app_from_env`, from the settings this process checked
and put in the environment variable `PUMPTRAIL_WEB_CONFIG` (JSON). What the
workers must agree on is shared outside them: login sessions (`web_sessions`)
and the login throttle (`login_throttle`) live in the database, the cookie
signing secret in `<data_dir>/web-secret`, the signing identity under
`<data_dir>/keys`. The code index repair (`db.code_index.CodeIndexer`) runs in
the one worker holding the lock on `<data_dir>/.web-code-index.lock`.
Exit status 0 after Ctrl-C or SIGTERM, 2 when the settings, rules, database or
signing secret cannot be used.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
import threading
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from pumptrail import __version__, settings
from pumptrail.commands import set_handler
from pumptrail.commands.db import (
    add_database_arguments,
    anchor_config,
    hl7_settings,
    load_clinic_rules,
    open_from_settings,
    resolve,
)
from pumptrail.errors import CommandError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from web.context import WebConfig

# The environment variable carrying the checked settings to the worker processes.
CONFIG_ENV: Final = "PUMPTRAIL_WEB_CONFIG"
# The import string uvicorn's worker processes build their app with.
APP_FACTORY: Final = "pumptrail.commands.serve:app_from_env"
CODE_INDEX_LOCK: Final = ".web-code-index.lock"
# The lock file stays open (and locked) while the worker holding it lives.
_code_index_lock: list[int] = []

SETTINGS = (
    "data_dir",
    "rules_dir",
    "db",
    "raw_store",
    "raw_store_mode",
    "inbox",
    "quarantine",
    "due_within_days",
    "host",
    "port",
    "log_level",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="serve the coder and auditor web view")
    parser.add_argument(
        "--idle-minutes",
        type=int,
        default=30,
        metavar="N",
        help="a login ends after N minutes without a request (default 30)",
    )
    parser.add_argument(
        "--secure-cookies",
        action="store_true",
        help="always mark cookies Secure (default: when the request came over https)",
    )
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-Proto/For from --forwarded-allow-ips (behind a TLS proxy)",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        metavar="IPS",
        help="proxies trusted with --proxy-headers (default 127.0.0.1)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes serving the one port (default 1)",
    )
    add_database_arguments(parser, SETTINGS)
    set_handler(parser, run)


def web_config(resolved: settings.Settings, **fields: Any) -> WebConfig:
    """What the web view needs of the settings, typed and frozen; `fields` set the
    web-only options (`idle_minutes`, `secure_cookies`...)."""
    from web.context import WebConfig

    return WebConfig(
        db_url=resolved.db,
        data_dir=resolved.data_dir,
        raw_store=resolved.raw_store,
        raw_store_mode=resolved.raw_store_mode,
        inbox=resolved.inbox,
        quarantine=resolved.quarantine,
        due_within_days=resolved.due_within_days,
        supervising_physician=resolved.supervising_physician,
        version=__version__,
        anchor=anchor_config(resolved),
        hl7=hl7_settings(resolved),
        **fields,
    )


def run(args: argparse.Namespace) -> int:
    from db.engine import safe_url_text
    from evidence import RulesError
    from evidence.devices import load_device_makers
    from evidence.edits import load_edits
    from ingest.logging_setup import configure_logging
    from web.app import create_app
    from web.auth import SecretError

    resolved = resolve(args)
    try:
        configure_logging(resolved.log_level)
    except ValueError as exc:
        raise CommandError(f"setting log_level: {exc}") from exc
    rules = load_clinic_rules(resolved)
    if args.idle_minutes < 1:
        raise CommandError("--idle-minutes: at least 1")
    if args.workers < 1:
        raise CommandError("--workers: at least 1")
    engine = open_from_settings(resolved)
    config = web_config(
        resolved,
        idle_minutes=args.idle_minutes,
        secure_cookies=True if args.secure_cookies else None,
    )
    try:
        app = create_app(
            config,
            rules=rules,
            engine=engine,
            edits=load_edits(resolved.rules_dir),
            device_makers=load_device_makers(resolved.rules_dir),
        )
    except (SecretError, RulesError) as exc:
        engine.dispose()
        raise CommandError(str(exc)) from exc
    host, port = resolved.host, resolved.port
    workers = f", {args.workers} workers" if args.workers > 1 else ""
    print(
        f"pumptrail {__version__}: web view on http://{host}:{port}/ "
        f"(database {safe_url_text(resolved.db)}{workers})",
        file=sys.stderr,
        flush=True,
    )
    if args.workers > 1:
        # The app built above proved the settings, rules and secret; each worker
        # builds its own from the same settings.
        del app
        engine.dispose()
        os.environ[CONFIG_ENV] = encode_config(
            config, rules_dir=resolved.rules_dir, log_level=resolved.log_level
        )
        serve_app(
            APP_FACTORY,
            host=host,
            port=port,
            workers=args.workers,
            proxy_headers=args.proxy_headers,
            forwarded_allow_ips=args.forwarded_allow_ips if args.proxy_headers else None,
        )
        return 0
    try:
        serve_app(
            app,
            host=host,
            port=port,
            proxy_headers=args.proxy_headers,
            forwarded_allow_ips=args.forwarded_allow_ips if args.proxy_headers else None,
        )
    finally:
        engine.dispose()
    return 0


def serve_app(
    app: Any,
    *,
    host: str,
    port: int,
    workers: int = 1,
    proxy_headers: bool = False,
    forwarded_allow_ips: str | None = None,
) -> None:
    """Serve the web app with uvicorn until Ctrl-C or SIGTERM (its own access log off).

    `app` is the app, or with `workers` > 1 the import string of a factory.

    uvicorn stops on the signal, then raises it again for the handler it found; a
    quiet handler here makes that a clean return instead of a KeyboardInterrupt
    thrown into the app's shutdown.
    """
    import uvicorn

    quiet: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        quiet = {sig: signal.signal(sig, _after_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            workers=workers if workers > 1 else None,
            factory=workers > 1,
            access_log=False,
            server_header=False,
            log_config=None,
            proxy_headers=proxy_headers,
            forwarded_allow_ips=forwarded_allow_ips,
        )
    finally:
        for sig, handler in quiet.items():
            signal.signal(sig, handler)


def _after_stop(_signum: int, _frame: FrameType | None) -> None:
    """The stop signal, raised again by uvicorn once it has shut down: already handled."""


def encode_config(config: WebConfig, *, rules_dir: Path | None, log_level: str) -> str:
    """The JSON `app_from_env` reads: the web config, the rules folder, the log level."""
    return json.dumps(
        {"web": _plain(config), "rules_dir": _plain(rules_dir), "log_level": log_level}
    )


def decode_config(text: str) -> tuple[WebConfig, Path | None, str]:
    """(web config, rules folder, log level) of `encode_config`'s JSON."""
    from db.checkpoints import AnchorConfig
    from evidence.dft import Hl7Settings
    from web.context import WebConfig

    payload = json.loads(text)
    web = dict(payload["web"])
    for name in ("data_dir", "raw_store", "inbox", "quarantine"):
        web[name] = Path(web[name])
    anchor = web.get("anchor")
    if anchor is not None:
        key = anchor.get("signing_key")
        web["anchor"] = AnchorConfig(
            **{**anchor, "data_dir": Path(anchor["data_dir"]), "signing_key": key and Path(key)}
        )
    web["hl7"] = Hl7Settings(**web["hl7"])
    rules_dir = payload.get("rules_dir")
    return WebConfig(**web), Path(rules_dir) if rules_dir else None, str(payload["log_level"])


def _plain(value: Any) -> Any:
    """`value` as JSON: dataclasses as objects, paths as strings, mappings as objects."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def app_from_env() -> FastAPI:
    """The app of one worker process: `create_app` on the settings in `PUMPTRAIL_WEB_CONFIG`.

    Only the worker that gets the code index lock repairs the code index; the
    others leave it alone (a worker restarted after the holder died takes it).
    """
    from evidence import load_rules
    from evidence.devices import load_device_makers
    from evidence.edits import load_edits
    from ingest.logging_setup import configure_logging
    from web.app import create_app

    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise CommandError(f"{CONFIG_ENV} is not set: start the workers with `pumptrail serve`")
    config, rules_dir, log_level = decode_config(text)
    configure_logging(log_level)
    if not _hold_code_index_lock(config.data_dir):
        config = replace(config, sync_codes_seconds=None)
    return create_app(
        config,
        rules=load_rules(rules_dir),
        edits=load_edits(rules_dir),
        device_makers=load_device_makers(rules_dir),
    )


def _hold_code_index_lock(data_dir: Path) -> bool:
    """True when this process holds (now or already) the code index lock of `data_dir`."""
    if _code_index_lock:
        return True
    descriptor = os.open(Path(data_dir) / CODE_INDEX_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return False
    _code_index_lock.append(descriptor)
    return True
