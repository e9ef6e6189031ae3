"""The README's run command on an empty data folder: migrations create the SQLite file, the
server starts, the Swagger UI is served and the bootstrap admin key scores a PASI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from app.schemas.scores import PASI_EXAMPLE
from tests.live import ROOT, LiveServer


def test_make_run_migrates_then_serves_uvicorn_with_uvloop() -> None:
    recipe = subprocess.run(
        ["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    migrate_at = recipe.index("alembic upgrade head")
    serve_at = recipe.index("uvicorn --factory app.main:create_app")
    assert migrate_at < serve_at
    assert re.search(r"--loop uvloop", recipe)
    assert "--port 8000" in recipe


def test_first_start_on_an_empty_data_folder_serves_docs_and_scores(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {**os.environ, "DATA_DIR": str(data_dir)}
    env.pop("DATABASE_URL", None)
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    database = data_dir / "psoriasis.db"
    assert database.exists()
    with LiveServer(f"sqlite:///{database}", data_dir) as server:
        docs = httpx.get(server.url + "/docs")
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()
        key_file = data_dir / "admin-api-key.txt"
        assert key_file.stat().st_mode & 0o777 == 0o600
        scored = httpx.post(
            server.url + "/v1/scores/pasi",
            json={"pasi": PASI_EXAMPLE},
            headers={"Authorization": f"Bearer {server.admin_key}"},
        )
        assert scored.status_code == 200
        assert scored.json()["pasi"] == 28.7


def test_the_embedded_database_is_created_and_migrated_on_first_start(tmp_path: Path) -> None:
    """Without the separate `alembic upgrade head` step: the SQLite default migrates itself."""
    data_dir = tmp_path / "fresh"
    database = data_dir / "psoriasis.db"
    data_dir.mkdir()  # for the server's log; the database file does not exist yet
    assert not database.exists()
    with LiveServer(f"sqlite:///{database}", data_dir, workers=2) as server:
        r = httpx.get(
            server.url + "/v1/patients", headers={"Authorization": f"Bearer {server.admin_key}"}
        )
        assert r.status_code == 200, r.text
    assert database.exists()
