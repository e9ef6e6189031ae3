"""Fixtures: the app on SQLite and on PostgreSQL (every API test runs on both), built by the
real migrations; tables are emptied between tests (commits are real, so concurrency is too)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.db.models import Base
from app.main import create_app
from app.services.api_keys import BOOTSTRAP_KEY_FILE
from app.settings import Settings
from tests.dbs import empty_database, migrate, selected_backends


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        default=None,
        help="comma-separated databases for API tests: sqlite,postgresql "
        "(default: env TEST_DATABASES or both)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        backends = selected_backends(metafunc.config.getoption("--db"))
        metafunc.parametrize("backend", backends, scope="session")


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with empty_database(backend, tmp_path_factory.mktemp(backend)) as url:
        migrate(url)
        yield url


@pytest.fixture(scope="session")
def data_dir(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(f"data-{backend}")


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """The service's settings for a test. Failed authentications are not limited (route tables
    send wrong keys to every route on purpose) unless a test asks for a limit; the collector is
    not frozen (see `gc_freeze`)."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        data_dir=data_dir,
        # Not frozen: a test session starts hundreds of apps, and each freeze would keep all
        # the garbage then alive for good.
        **{"failed_auth_per_minute": 0, "gc_freeze": False, **overrides},
    )


@pytest.fixture(scope="session")
def app_client(database_url: str, data_dir: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(database_url, data_dir))
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="session")
def admin_key(app_client: TestClient, data_dir: Path) -> str:
    return (data_dir / BOOTSTRAP_KEY_FILE).read_text().strip()


# Keys outlive a test (their names are unique); organizations other than the migration's
# `default` do not, so every test starts as a single-organization deployment.
KEPT_TABLES = {"api_keys", "api_key_organizations", "organizations"}


def _empty_tables(client: TestClient) -> None:
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    names = [t.name for t in reversed(Base.metadata.sorted_tables) if t.name not in KEPT_TABLES]
    others = "SELECT id FROM organizations WHERE name <> 'default'"
    with db.transaction() as session:
        if db.is_sqlite:
            for name in names:
                session.execute(text(f"DELETE FROM {name}"))
        else:
            session.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
        session.execute(
            text(f"DELETE FROM api_key_organizations WHERE organization_id IN ({others})")
        )
        session.execute(text(f"DELETE FROM organizations WHERE id IN ({others})"))


@pytest.fixture
def client(app_client: TestClient, admin_key: str) -> Iterator[TestClient]:
    """An authenticated client (admin key: every scope) on an emptied database."""
    _empty_tables(app_client)
    app_client.headers["Authorization"] = f"Bearer {admin_key}"
    try:
        yield app_client
    finally:
        app_client.headers.pop("Authorization", None)
