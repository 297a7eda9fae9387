"""`pumptrail demo`: the README's first command works on a fresh folder, and again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, func, select

from db.models import sessions
from db.users import users
from pumptrail.commands.demo import DEMO_ACCOUNTS


def run_demo(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pumptrail.cli", "demo", "--once", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_demo_imports_its_inbox_and_sets_up_accounts(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    first = run_demo(data_dir)
    assert first.returncode == 0, first.stderr
    assert "synthetic exports dropped" in first.stdout
    quarantined = sorted(p.name for p in (data_dir / "quarantine").glob("*.error.json"))
    assert quarantined == [
        "README-from-the-programmer-vendor.txt.error.json",
        "transfer-interrupted.psl.error.json",
    ]
    archived = [p for p in (data_dir / "archive").rglob("*") if p.is_file()]
    assert len(archived) == 22
    assert not [p for p in (data_dir / "inbox").rglob("*") if p.is_file()]
    engine = create_engine(f"sqlite:///{data_dir}/pumptrail.db")
    with engine.connect() as connection:
        # 3 pumps x 7 visits: the twice-exported visit is one session, and the interrupted
        # transfer's visit arrived whole as well.
        assert connection.execute(select(func.count()).select_from(sessions)).scalar_one() == 21
        names = set(connection.execute(select(users.c.username)).scalars())
    engine.dispose()
    assert names == {name for name, _role in DEMO_ACCOUNTS}

    again = run_demo(data_dir)
    assert again.returncode == 0, again.stderr
    assert "synthetic exports dropped" not in again.stdout
