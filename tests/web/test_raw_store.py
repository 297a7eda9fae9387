"""The raw download and the replay page read the raw store the database uses (raw_store_mode)."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from ingest.rawstore import DatabaseRawStore, RawStore, copy_raw_store
from tests.web.conftest import SECRET, login
from tests.web.support import DemoData
from web.app import create_app
from web.context import WebConfig


def test_raw_download_and_replay_read_the_database_store(data: DemoData, engine: Engine) -> None:
    config = WebConfig.for_database(
        data.url,
        data_dir=data.root,
        sync_codes_seconds=None,
        version="test",
        raw_store_mode="database",
    )
    app = create_app(config, secret=SECRET)
    with TestClient(app) as client:
        login(client, "audrey")
        session_id = data.session_ids[0]
        page = client.get(f"/sessions/{session_id}").text
        digest = re.search(r'href="/raw/([0-9a-f]{64})"', page).group(1)  # type: ignore[union-attr]
        # The folder has the file, the database store does not yet.
        assert client.get(f"/raw/{digest}").status_code == 410
        copied = copy_raw_store(RawStore(data.raw_store), DatabaseRawStore(engine))
        assert digest in copied.copied
        for folder in sorted(Path(data.raw_store).rglob("*"), reverse=True):
            folder.chmod(0o700)
        shutil.rmtree(data.raw_store)
        response = client.get(f"/raw/{digest}")
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == digest
        replay = client.get(f"/sessions/{session_id}/replay")
        assert replay.status_code == 200
        assert "raw_missing" not in replay.text
        assert "tampered" not in replay.text
