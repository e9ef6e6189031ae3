"""Schema fuzzing: schemathesis generates requests from the app's own OpenAPI document and checks
that no answer is a server error, that every status code and content type is documented, and that
every body matches its documented schema. Budget: a fixed, derandomized number of examples per
operation, so the run is repeatable and fits CI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from app.services.api_keys import BOOTSTRAP_KEY_FILE
from tests.conftest import make_settings
from tests.dbs import empty_database, migrate

EXAMPLES_PER_OPERATION = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

schema = schemathesis.openapi.from_dict(create_app().openapi())


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with empty_database("sqlite", tmp) as url:
        migrate(url)
        app = create_app(make_settings(url, tmp, rate_limit_per_minute=0))
        with TestClient(app, raise_server_exceptions=False) as client:
            key = (tmp / BOOTSTRAP_KEY_FILE).read_text().strip()
            client.headers["Authorization"] = f"Bearer {key}"
            yield client


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, fuzz_client: TestClient
) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    kwargs.pop("cookies", None)
    if isinstance(kwargs.get("data"), bytes | str):  # requests-style raw body -> httpx's content
        kwargs["content"] = kwargs.pop("data")
    headers = dict(kwargs.pop("headers", None) or {})
    # Always authenticate: otherwise most generated requests stop at 401 and test nothing.
    headers["Authorization"] = fuzz_client.headers["Authorization"]
    response = fuzz_client.request(headers=headers, **kwargs)
    case.validate_response(response, checks=CHECKS)
