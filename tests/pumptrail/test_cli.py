"""The `pumptrail` command as scripts and pipes see it: start-up imports, typed
settings, errors and exit statuses, closed pipes, no terminal, progress, decode output."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from parsers.errors import PumptrailError
from pumptrail import cli, settings
from pumptrail.commands import user as user_command
from pumptrail.errors import CommandError
from tests.ingest.exports import history, write_binaries

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("sqlalchemy", "fastapi", "alembic", "apscheduler", "starlette", "construct", "tqdm")
GOLDEN = sorted(
    p
    for folder in ("psl-binary", "psl-csv")
    for p in (REPO / "fixtures" / folder).iterdir()
    if p.suffix in (".psl", ".csv") and p.with_suffix(".expected.json").is_file()
)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a `pumptrail` subprocess: no config file, not under systemd."""
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "JOURNAL_STREAM")}
    env = {k: v for k, v in env.items() if not k.startswith("PUMPTRAIL_")}
    return {**env, "PUMPTRAIL_CONFIG": "", **extra}


def pumptrail(*args: str) -> list[str]:
    return [sys.executable, "-m", "pumptrail.cli", *args]


# -- start-up -------------------------------------------------------------------------


def test_help_imports_no_database_web_or_scheduler_library() -> None:
    probe = (
        "import sys\n"
        "from pumptrail.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('heavy:', ','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(  # noqa: PLW1510 - the status is asserted
        [sys.executable, "-c", probe], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "exit status:" in done.stdout  # the help was printed, epilog included
    assert done.stdout.splitlines()[-1] == "heavy: "


def test_help_lists_every_exit_status() -> None:
    text = cli.build_parser().format_help()
    for status in (0, 1, 2, cli.EXIT_INTERRUPTED, cli.EXIT_BROKEN_PIPE):
        assert f"\n  {status:<3}  " in text
    docs = (REPO / "docs" / "operations.md").read_text("utf-8")
    section = docs.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for status in (0, 1, 2, cli.EXIT_INTERRUPTED, cli.EXIT_BROKEN_PIPE):
        assert f"| {status} |" in section


# -- typed settings ---------------------------------------------------------------------


def test_every_declared_setting_is_a_typed_attribute(tmp_path: Path) -> None:
    assert settings.typed_attribute_problems() == []
    resolved = settings.load(environ={"PUMPTRAIL_DATA_DIR": str(tmp_path)})
    for declared in settings.SETTINGS:
        value = getattr(resolved, declared.name)
        assert isinstance(value, declared.kind), declared.name
        assert resolved.values[declared.name] == value


def test_a_setting_without_a_typed_attribute_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = settings.Setting("coffee_cups", int, 2, "cups per shift")
    monkeypatch.setattr(settings, "SETTINGS", (*settings.SETTINGS, extra))
    assert settings.typed_attribute_problems() == [
        "setting coffee_cups has no attribute in Settings"
    ]
    wrong = settings.Setting("port", str, "8300", "port as text")
    kept = tuple(s for s in settings.SETTINGS if s.name not in ("port", "coffee_cups"))
    monkeypatch.setattr(settings, "SETTINGS", (*kept, wrong))
    assert settings.typed_attribute_problems() == ["Settings.port is int, the setting is str"]


def test_the_role_choices_are_the_web_views_roles() -> None:
    from web.users import ROLES

    assert tuple(user_command.ROLES) == tuple(ROLES)


def test_the_raw_store_mode_choices_are_the_raw_stores_modes() -> None:
    from ingest.rawstore import RAW_STORE_MODES

    assert settings.RAW_STORE_MODES == RAW_STORE_MODES
    assert settings.SETTINGS_BY_NAME["raw_store_mode"].choices == RAW_STORE_MODES


def test_an_unknown_raw_store_mode_is_unusable_settings() -> None:
    from ingest.rawstore import RawStoreModeError

    assert cli.exit_status_of(RawStoreModeError("x")) == 2


def test_the_service_takes_its_config_without_importing_the_cli() -> None:
    probe = "import sys, ingest.service; print(any(m.startswith('pumptrail') for m in sys.modules))"
    done = subprocess.run(  # noqa: PLW1510 - the status is asserted
        [sys.executable, "-c", probe], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    assert done.stdout.strip() == "False", done.stderr


# -- errors and exit statuses ----------------------------------------------------------------


def test_exit_status_of_errors() -> None:
    assert cli.exit_status_of(CommandError("x")) == 2
    assert cli.exit_status_of(CommandError("x", exit_status=1)) == 1
    assert cli.exit_status_of(settings.SettingsError("x")) == 2
    assert cli.exit_status_of(PumptrailError("x")) == 1

    class Derived(settings.SettingsError):
        pass

    assert cli.exit_status_of(Derived("x")) == 2  # the table is searched along the MRO


def test_a_bad_setting_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUMPTRAIL_SERIAL_BAUD", "fast")
    assert cli.main(["settings"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "pumptrail settings: environment PUMPTRAIL_SERIAL_BAUD: setting serial_baud: "
        "expected int, found 'fast'\n"
    )


def test_a_nested_command_names_itself_in_its_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["audit", "verify", "--head", "nonsense", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pumptrail audit verify: --head: ")
    assert len(err.splitlines()) == 1


# -- pipes and terminals ------------------------------------------------------------------


def test_decode_into_a_closed_pipe_ends_quietly() -> None:
    process = subprocess.Popen(
        pumptrail("decode", *map(str, GOLDEN[:10])),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first line is written
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == cli.EXIT_BROKEN_PIPE
    assert err == ""


def test_audit_show_into_a_pipe_closed_after_one_line(tmp_path: Path) -> None:
    env = clean_env(PUMPTRAIL_DATA_DIR=str(tmp_path))
    paths = write_binaries(tmp_path / "in", history(31, visits=3))
    subprocess.run(pumptrail("import", *map(str, paths)), env=env, check=True, capture_output=True)
    process = subprocess.Popen(
        ["/bin/sh", "-c", f"{sys.executable} -m pumptrail.cli audit show --limit 0 | head -1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    out, err = process.communicate(timeout=60)
    lines = len(out.splitlines())
    assert lines == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert err == ""


def test_audit_show_with_the_reader_gone_exits_141(tmp_path: Path) -> None:
    env = clean_env(PUMPTRAIL_DATA_DIR=str(tmp_path))
    paths = write_binaries(tmp_path / "in", history(32, visits=1))
    subprocess.run(pumptrail("import", *map(str, paths)), env=env, check=True, capture_output=True)
    process = subprocess.Popen(
        pumptrail("audit", "show"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == cli.EXIT_BROKEN_PIPE
    assert err == ""


def test_user_add_without_a_terminal_says_what_to_do(tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: PLW1510 - the status is asserted
        pumptrail("user", "add", "cora", "--role", "coder", "--data-dir", str(tmp_path)),
        input=b"",
        capture_output=True,
        env=clean_env(),
        timeout=60,
        start_new_session=True,  # no controlling terminal either
    )
    assert done.returncode == 2
    assert done.stdout == b""
    assert done.stderr.decode() == (
        "pumptrail user add: standard input is not a terminal to ask for the password on: "
        "pass --password-stdin and send the password as one line on standard input\n"
    )


# -- progress -----------------------------------------------------------------------------


def _run_with_stderr_on_a_pty(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run with standard error on a pseudo-terminal; returns status, stdout, terminal text."""
    master, slave = pty.openpty()
    # 24 rows of 100 columns, as a terminal window has (a new pty has 0 x 0).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    assert process.stdout is not None
    out = process.stdout.read().decode()
    status = process.wait(timeout=60)
    os.close(master)
    return status, out, b"".join(chunks).decode(errors="replace")


def test_import_progress_on_a_terminal_only(tmp_path: Path) -> None:
    paths = write_binaries(tmp_path / "in", history(33, visits=4))
    # The signing identity exists already: its creation is announced on stderr once.
    for data_dir in ("a", "b", "c"):
        assert cli.main(["keys", "init", "--data-dir", str(tmp_path / data_dir)]) == 0
    piped = subprocess.run(  # noqa: PLW1510 - the status is asserted
        pumptrail("import", str(tmp_path / "in"), "--data-dir", str(tmp_path / "a")),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )
    assert piped.returncode == 0
    assert piped.stderr == ""
    assert len(piped.stdout.splitlines()) == len(paths) + 1

    argv = pumptrail("import", str(tmp_path / "in"), "--data-dir", str(tmp_path / "b"))
    status, out, terminal = _run_with_stderr_on_a_pty(argv, clean_env())
    assert status == 0
    assert out.splitlines() == [
        line.replace(str(tmp_path / "a"), str(tmp_path / "b")) for line in piped.stdout.splitlines()
    ]
    assert f"/{len(paths)}" in terminal and "files" in terminal

    argv = pumptrail("import", str(tmp_path / "in"), "--data-dir", str(tmp_path / "c"))
    status, _out, terminal = _run_with_stderr_on_a_pty(argv, clean_env(INVOCATION_ID="abc123"))
    assert status == 0
    assert terminal == ""  # under systemd: no bar, even on a terminal


def test_replay_progress_on_a_terminal_only(tmp_path: Path) -> None:
    env = clean_env(PUMPTRAIL_DATA_DIR=str(tmp_path))
    for seed in (41, 42):
        paths = write_binaries(tmp_path / f"in{seed}", history(seed, visits=2), prefix=f"p{seed}")
        subprocess.run(
            pumptrail("import", *map(str, paths)), env=env, check=True, capture_output=True
        )
    piped = subprocess.run(  # noqa: PLW1510 - the status is asserted
        pumptrail("replay"), capture_output=True, text=True, env=env, timeout=120
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    status, out, terminal = _run_with_stderr_on_a_pty(pumptrail("replay"), env)
    assert status == 0
    assert out == piped.stdout
    assert "2/2" in terminal and "pumps" in terminal


# -- decode output ----------------------------------------------------------------------------


def test_decode_prints_the_golden_documents_byte_for_byte(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert GOLDEN
    for path in GOLDEN:
        assert cli.main(["decode", str(path)]) == 0
        expected = path.with_suffix(".expected.json").read_text("utf-8")
        assert capsys.readouterr().out == expected, path.name


def test_decode_of_several_files_is_the_indented_array(capsys: pytest.CaptureFixture[str]) -> None:
    chosen = GOLDEN[:3] + [p for p in GOLDEN if p.suffix == ".csv"][:2]
    assert cli.main(["decode", *map(str, chosen)]) == 0
    documents = [json.loads(p.with_suffix(".expected.json").read_text("utf-8")) for p in chosen]
    assert capsys.readouterr().out == json.dumps(documents, indent=2, ensure_ascii=False) + "\n"


def test_every_class_of_the_exit_status_table_exists() -> None:
    import importlib

    for dotted in cli.EXIT_STATUS:
        module, _, name = dotted.rpartition(".")
        found = getattr(importlib.import_module(module), name, None)
        assert isinstance(found, type) and issubclass(found, Exception), dotted
        assert f"{found.__module__}.{found.__qualname__}" == dotted
