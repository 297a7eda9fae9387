"""`pumptrail serve [--host H] [--port P]`: the coder and auditor web view.

Serves `web.create_app` with uvicorn on `host`:`port` (settings; default
127.0.0.1:8300, local only: put a TLS reverse proxy in front to reach it from
other machines, and pass `--proxy-headers` so cookies are marked Secure). The
database is opened (an empty one is set up), the signing secret is read from
`<data_dir>/web-secret` (created 0600 on first run). uvicorn's access log is off:
the app writes its own (`pumptrail.web.access`), naming route templates, never
concrete paths or query strings, which may carry a patient ID. The app gets
its settings as a typed `web.context.WebConfig` built here (`web_config`).
Exit status 0 after Ctrl-C or SIGTERM, 2 when the settings, rules, database or
signing secret cannot be used.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

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
    from web.context import WebConfig

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
    engine = open_from_settings(resolved)
    try:
        app = create_app(
            web_config(
                resolved,
                idle_minutes=args.idle_minutes,
                secure_cookies=True if args.secure_cookies else None,
            ),
            rules=rules,
            engine=engine,
            edits=load_edits(resolved.rules_dir),
            device_makers=load_device_makers(resolved.rules_dir),
        )
    except (SecretError, RulesError) as exc:
        engine.dispose()
        raise CommandError(str(exc)) from exc
    host, port = resolved.host, resolved.port
    print(
        f"pumptrail {__version__}: web view on http://{host}:{port}/ "
        f"(database {safe_url_text(resolved.db)})",
        file=sys.stderr,
        flush=True,
    )
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
    proxy_headers: bool = False,
    forwarded_allow_ips: str | None = None,
) -> None:
    """Serve the web app with uvicorn until Ctrl-C or SIGTERM (its own access log off).

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
