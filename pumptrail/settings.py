"""Settings, declared once: name, type, default, help.

Each declaration drives five things: the typed attribute of `Settings` that the
commands read, the TOML config file, the environment variable
`PUMPTRAIL_<NAME>`, the CLI flag `--<name>` (underscores as dashes) and the settings
section of docs/operations.md (`pumptrail settings --markdown`). Precedence, lowest
first: built-in default, config file, environment, command line.

Defaults that are paths derive from `data_dir` (the user's data directory), so a
clinic that sets only `data_dir` gets every folder and the SQLite database beneath it.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from parsers.errors import PumptrailError

ENV_PREFIX = "PUMPTRAIL_"
CONFIG_ENV = "PUMPTRAIL_CONFIG"
# The modes of `ingest.rawstore.RAW_STORE_MODES`, here so that loading the settings
# does not import the database library (tests/pumptrail/test_cli.py checks that the
# two agree).
RAW_STORE_MODES = ("auto", "files", "database")


class SettingsError(PumptrailError):
    """Raised when a configuration value cannot be used: a value of the wrong type,
    negative or not one of its choices, an unreadable config file, or an unknown name
    in it (the message names the source and the setting). Also raised at import when `Settings` lacks a typed
    attribute for a declared setting."""


@dataclass(frozen=True)
class Setting:
    name: str
    kind: type
    default: Any
    help: str
    # Path defaults are written relative to data_dir: "{data_dir}/inbox".
    derived: bool = False
    # The values a text setting may take (empty: any).
    choices: tuple[str, ...] = ()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "data_dir",
        Path,
        platformdirs.user_data_dir("pumptrail", appauthor=False),
        "folder for the database, raw store, inbox, archive and quarantine",
    ),
    Setting(
        "db",
        str,
        "sqlite:///{data_dir}/pumptrail.db",
        "database URL: sqlite:///PATH (default) or postgresql+psycopg://USER@HOST/DB",
        derived=True,
    ),
    Setting(
        "inbox", Path, "{data_dir}/inbox", "watch folder where exports are dropped", derived=True
    ),
    Setting(
        "archive",
        Path,
        "{data_dir}/archive",
        "imported files, moved to archive/YYYY/MM/",
        derived=True,
    ),
    Setting(
        "quarantine",
        Path,
        "{data_dir}/quarantine",
        "refused files, each beside <name>.error.json with its reason",
        derived=True,
    ),
    Setting(
        "raw_store",
        Path,
        "{data_dir}/raw",
        "content-addressed copy of every imported file (SHA-256, read-only)",
        derived=True,
    ),
    Setting(
        "raw_store_mode",
        str,
        "auto",
        "where raw exports are kept: auto (PostgreSQL: in the database, shared by every "
        "workstation; SQLite: the raw_store folder), files (the raw_store folder) or "
        "database",
        choices=RAW_STORE_MODES,
    ),
    Setting(
        "rules_dir",
        Path,
        "{data_dir}/rules",
        "a clinic's rule files (profiles.toml, roles.toml, thresholds.toml, drugs.toml) "
        "extending the built-in payer profiles and code tables; absent files: built-ins",
        derived=True,
    ),
    Setting("poll_seconds", float, 2.0, "seconds between inbox polls"),
    Setting(
        "settle_seconds",
        float,
        2.0,
        "a file is ready when at least this old and unchanged between two polls",
    ),
    Setting(
        "truncated_grace_seconds",
        float,
        120.0,
        "a file refused as cut short stays in the inbox until unchanged this long "
        "(a slow copy may still finish it)",
    ),
    Setting(
        "unreadable_grace_seconds",
        float,
        600.0,
        "a file that cannot be read, archived or quarantined is retried; after this long "
        "it is listed as needing attention (imports page, `pumptrail status`)",
    ),
    Setting(
        "import_jobs",
        int,
        0,
        "worker processes that decode a backlog of more than 64 ready inbox files "
        "(0: one per core; 1: none, every file imported on its own)",
    ),
    Setting("serial_port", str, "", "serial device of the programmer dock (empty: no receiver)"),
    Setting("serial_baud", int, 115200, "serial line speed (8N1, no flow control)"),
    Setting("due_within_days", int, 14, "refill-due report: pumps due within this many days"),
    Setting(
        "retry_max_seconds",
        float,
        60.0,
        "longest wait between import retries while the database is unreachable",
    ),
    Setting(
        "outage_log_seconds",
        float,
        60.0,
        "while the database is unreachable, log the outage at most once per this many seconds",
    ),
    Setting("host", str, "127.0.0.1", "address the web view listens on"),
    Setting("port", int, 8300, "port the web view listens on"),
    Setting("log_level", str, "INFO", "DEBUG, INFO, WARNING or ERROR"),
    Setting(
        "signing_key",
        str,
        "",
        "PEM file with the clinic's private key and certificate that sign audit checkpoints "
        "and evidence packets (empty: {data_dir}/keys/clinic-signing.pem, created on first use; "
        "under systemd, a LoadCredential= path)",
    ),
    Setting(
        "clinic_name",
        str,
        "pumptrail clinic",
        "the clinic's name in the signing certificate a new identity gets",
    ),
    Setting(
        "supervising_physician",
        str,
        "",
        "operator ID (`pumptrail provider add`) of the clinic's default supervising "
        "physician for staff-performed visits, shown on the evidence page and packet "
        "(empty: none)",
    ),
    Setting(
        "audit_syslog",
        str,
        "/dev/log",
        "syslog socket that receives a copy of every audit checkpoint "
        "(identifier pumptrail-audit; empty: none)",
    ),
    Setting(
        "billing_mllp",
        str,
        "",
        "HOST:PORT of the billing system's HL7 MLLP listener that receives DFT^P03 charge "
        "messages (empty: messages wait in the outbox)",
    ),
    Setting(
        "billing_mllp_tls",
        bool,
        False,
        "connect to billing_mllp over TLS (the server's certificate is verified)",
    ),
    Setting(
        "billing_mllp_ca",
        str,
        "",
        "PEM file of the CA that signed the billing listener's TLS certificate "
        "(empty: the system's CAs)",
    ),
    Setting(
        "billing_ack_seconds",
        float,
        30.0,
        "how long to wait for billing's ACK before the message is sent again",
    ),
    Setting("hl7_sending_facility", str, "", "MSH-4 of the charge messages: this clinic"),
    Setting(
        "hl7_receiving_application", str, "", "MSH-5 of the charge messages: the billing system"
    ),
    Setting("hl7_receiving_facility", str, "", "MSH-6 of the charge messages"),
    Setting(
        "hl7_processing_id",
        str,
        "P",
        "MSH-11 of the charge messages: P (production), T (training) or D (debugging)",
        choices=("P", "T", "D"),
    ),
    Setting(
        "hl7_charge_codes",
        str,
        "",
        "the clinic's chargemaster codes for FT1-7: CODE=CHARGE pairs separated by commas "
        "(96522=CM1001,J2274=CM2274); an unmapped CPT/HCPCS code is sent as itself",
    ),
)

SETTINGS_BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Resolved settings, one typed attribute per declared setting.

    `sources` says where each value came from (`default`, `config FILE`,
    `environment NAME`, `command line`). Every name in SETTINGS has an attribute
    here of the declared kind: the module refuses to load otherwise.
    """

    data_dir: Path
    db: str
    inbox: Path
    archive: Path
    quarantine: Path
    raw_store: Path
    raw_store_mode: str
    rules_dir: Path
    poll_seconds: float
    settle_seconds: float
    truncated_grace_seconds: float
    unreadable_grace_seconds: float
    import_jobs: int
    serial_port: str
    serial_baud: int
    due_within_days: int
    retry_max_seconds: float
    outage_log_seconds: float
    host: str
    port: int
    log_level: str
    signing_key: str
    clinic_name: str
    supervising_physician: str
    audit_syslog: str
    billing_mllp: str
    billing_mllp_tls: bool
    billing_mllp_ca: str
    billing_ack_seconds: float
    hl7_sending_facility: str
    hl7_receiving_application: str
    hl7_receiving_facility: str
    hl7_processing_id: str
    hl7_charge_codes: str
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def values(self) -> Mapping[str, Any]:
        """Every setting by name, in declaration order (for listings and docs)."""
        return {s.name: getattr(self, s.name) for s in SETTINGS}


def typed_attribute_problems() -> list[str]:
    """Declared settings without a `Settings` attribute of their kind, and vice versa."""
    # Annotations are strings here (postponed evaluation): compare by type name.
    declared = {f.name: f.type for f in fields(Settings) if f.name != "sources"}
    problems = []
    for setting in SETTINGS:
        kind = declared.pop(setting.name, None)
        if kind is None:
            problems.append(f"setting {setting.name} has no attribute in Settings")
        elif kind != setting.kind.__name__:
            problems.append(
                f"Settings.{setting.name} is {kind}, the setting is {setting.kind.__name__}"
            )
    problems.extend(f"Settings.{name} is not a declared setting" for name in declared)
    return problems


_PROBLEMS = typed_attribute_problems()
if _PROBLEMS:
    raise SettingsError("; ".join(_PROBLEMS))


def _convert(setting: Setting, raw: Any, source: str) -> Any:
    try:
        if setting.kind is Path:
            return Path(str(raw)).expanduser()
        if setting.kind is bool:
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in {"1", "true", "yes", "on"}
        converted = setting.kind(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(
            f"{source}: setting {setting.name}: expected {setting.kind.__name__}, found {raw!r}"
        ) from exc
    if setting.choices and converted not in setting.choices:
        raise SettingsError(
            f"{source}: setting {setting.name}: expected one of "
            f"{', '.join(setting.choices)}, found {raw!r}"
        )
    if setting.kind in (int, float) and converted < 0:
        raise SettingsError(
            f"{source}: setting {setting.name}: must not be negative, found {raw!r}"
        )
    return converted


def add_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """Add `--<name>` flags for settings (all when `names` is None) to a CLI parser."""
    for setting in SETTINGS:
        if names is not None and setting.name not in names:
            continue
        parser.add_argument(
            "--" + setting.name.replace("_", "-"),
            dest=f"setting_{setting.name}",
            default=None,
            metavar=setting.name.upper(),
            help=f"{setting.help} (env {ENV_PREFIX}{setting.name.upper()})",
        )


def load(
    *,
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Resolve every setting: default < config file < environment < CLI."""
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(CONFIG_ENV):
        config_file = Path(environ[CONFIG_ENV])
    file_values: dict[str, Any] = {}
    if config_file is not None:
        try:
            with config_file.open("rb") as handle:
                file_values = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"config file {config_file}: {exc}") from exc
        unknown = sorted(set(file_values) - set(SETTINGS_BY_NAME))
        if unknown:
            raise SettingsError(
                f"config file {config_file}: unknown setting(s) {', '.join(unknown)}"
            )
    cli = cli or {}
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        env_name = ENV_PREFIX + setting.name.upper()
        if cli.get(setting.name) is not None:
            raw[setting.name], sources[setting.name] = cli[setting.name], "command line"
        elif environ.get(env_name):
            raw[setting.name], sources[setting.name] = environ[env_name], f"environment {env_name}"
        elif setting.name in file_values:
            raw[setting.name], sources[setting.name] = (
                file_values[setting.name],
                f"config {config_file}",
            )
        else:
            raw[setting.name], sources[setting.name] = setting.default, "default"
    values: dict[str, Any] = {}
    data_dir = _convert(SETTINGS_BY_NAME["data_dir"], raw["data_dir"], sources["data_dir"])
    for setting in SETTINGS:
        value = raw[setting.name]
        if setting.derived and sources[setting.name] == "default":
            value = str(value).format(data_dir=data_dir)
        values[setting.name] = _convert(setting, value, sources[setting.name])
    return Settings(**values, sources=sources)


def from_args(args: argparse.Namespace, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings for a parsed command line (flags added by `add_arguments`)."""
    cli = {
        s.name: getattr(args, f"setting_{s.name}")
        for s in SETTINGS
        if getattr(args, f"setting_{s.name}", None) is not None
    }
    config = getattr(args, "config", None)
    return load(cli=cli, environ=environ, config_file=Path(config) if config else None)


def _markdown_default(setting: Setting) -> str:
    if setting.name == "data_dir":
        return "the user data folder (`~/.local/share/pumptrail` on Linux)"
    if setting.default == "":
        return "empty"
    return f"`{setting.default}`"


def _markdown_text(text: str) -> str:
    """Help text in a table cell: no HTML tags, no column breaks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def markdown_table(render_default: Callable[[Setting], str] | None = None) -> str:
    """The settings section of the docs, generated from the declarations."""
    lines = [
        "| setting | environment | flag | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        default = render_default(s) if render_default else _markdown_default(s)
        lines.append(
            f"| `{s.name}` | `{ENV_PREFIX}{s.name.upper()}` | `--{s.name.replace('_', '-')}` "
            f"| {default} | {_markdown_text(s.help)} |"
        )
    return "\n".join(lines) + "\n"
