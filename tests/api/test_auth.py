"""Authentication and authorisation, generated from the app's own routes, plus the key life cycle
(bootstrap, hashing, revocation, CLI), rate limiting and the HTTP hardening around them."""

from __future__ import annotations

import logging
import os
import re
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import text

from app.auth.keys import ALL_SCOPES, Scope
from app.cli import main as keys_cli
from app.main import create_app
from app.schemas.scores import PASI_EXAMPLE
from app.services.api_keys import BOOTSTRAP_KEY_FILE
from app.settings import Settings, get_settings
from tests.conftest import make_settings
from tests.dbs import empty_database, migrate

PROBLEM_JSON = "application/problem+json"
ORIGIN = "https://ehr.example"


# --------------------------------------------------------------------------- the routes


@dataclass(frozen=True)
class V1Route:
    method: str
    path: str
    scopes: tuple[Scope, ...]  # every scope dependency found in the route's dependency tree

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    def url(self) -> str:
        return re.sub(r"\{[^}]+\}", lambda _m: str(uuid.uuid4()), self.path)


def _scope_dependencies(dependant: Dependant) -> list[Scope]:
    found: list[Scope] = []
    for sub in dependant.dependencies:
        scope = getattr(sub.call, "required_scope", None)
        if scope is not None:
            found.append(scope)
        found.extend(_scope_dependencies(sub))
    return found


def _route_entries(app: Any) -> Iterator[tuple[str, set[str], Dependant]]:
    """(path, methods, dependant) of every API route, whether or not the installed FastAPI keeps
    included routers as lazy branches of `app.routes`."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.16x
    except ImportError:  # pragma: no cover - older FastAPI flattens included routers
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield route.path, set(route.methods), route.dependant
        return
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield str(context.path), set(context.methods or ()), context.dependant


def v1_routes(app: Any) -> list[V1Route]:
    routes = []
    for path, methods, dependant in _route_entries(app):
        if not path.startswith("/v1"):
            continue
        scopes = tuple(_scope_dependencies(dependant))
        routes.extend(V1Route(method, path, scopes) for method in sorted(methods))
    return routes


V1_ROUTES = v1_routes(create_app())


def _send(client: TestClient, route: V1Route, headers: dict[str, str] | None = None) -> Any:
    body: dict[str, Any] | None = {} if route.method in {"POST", "PUT"} else None
    return client.request(route.method, route.url(), json=body, headers=headers)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _new_key(client: TestClient, scopes: list[str], name: str = "key") -> tuple[str, str]:
    """(id, token) of a new key created with the admin client."""
    r = client.post(
        "/v1/api-keys", json={"name": f"{name}-{uuid.uuid4().hex[:10]}", "scopes": scopes}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"]), str(r.json()["key"])


def _assert_401(r: Any) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    body = r.json()
    assert body["status"] == 401
    assert body["type"]
    assert body["title"]
    assert body["detail"]


@pytest.fixture
def anonymous(app_client: TestClient) -> TestClient:
    """The shared app with no Authorization header."""
    assert "Authorization" not in app_client.headers
    return app_client


@pytest.fixture(scope="module")
def keys_lacking(app_client: TestClient, admin_key: str) -> dict[Scope, str]:
    """For each scope, a key holding every other scope."""
    keys = {}
    for scope in Scope:
        others = sorted(s.value for s in ALL_SCOPES - {scope})
        r = app_client.post(
            "/v1/api-keys",
            json={"name": f"lacks-{scope.value}-{uuid.uuid4().hex[:8]}", "scopes": others},
            headers=_auth(admin_key),
        )
        assert r.status_code == 201, r.text
        keys[scope] = r.json()["key"]
    return keys


@pytest.fixture(scope="module")
def keys_holding(app_client: TestClient, admin_key: str) -> dict[Scope, str]:
    """For each scope, a key holding that scope only."""
    keys = {}
    for scope in Scope:
        r = app_client.post(
            "/v1/api-keys",
            json={"name": f"only-{scope.value}-{uuid.uuid4().hex[:8]}", "scopes": [scope.value]},
            headers=_auth(admin_key),
        )
        assert r.status_code == 201, r.text
        keys[scope] = r.json()["key"]
    return keys


def _scope_of(route: V1Route) -> Scope:
    assert len(route.scopes) == 1, f"{route.id} has scope dependencies {route.scopes}"
    return route.scopes[0]


# --------------------------------------------------------------------------- route inventory


def test_the_route_inventory_finds_the_v1_api() -> None:
    ids = {r.id for r in V1_ROUTES}
    assert len(V1_ROUTES) >= 20
    assert {
        "POST /v1/scores/pasi",
        "POST /v1/patients",
        "GET /v1/patients/{patient_id}/outcomes",
        "DELETE /v1/api-keys/{key_id}",
        "GET /v1/audit-events",
    } <= ids


def test_every_v1_route_has_exactly_one_scope_dependency() -> None:
    missing_or_many = {r.id: r.scopes for r in V1_ROUTES if len(r.scopes) != 1}
    assert missing_or_many == {}


@pytest.mark.parametrize("route", V1_ROUTES, ids=lambda r: r.id)
def test_each_route_requires_the_scope_its_kind_needs(route: V1Route) -> None:
    if route.path.startswith("/v1/scores/"):
        expected = Scope.SCORES
    elif route.path.startswith(("/v1/api-keys", "/v1/audit-events", "/v1/organizations")):
        expected = Scope.ADMIN
    elif route.method == "GET":
        expected = Scope.READ
    else:
        expected = Scope.WRITE
    assert _scope_of(route) is expected


# --------------------------------------------------------------------------- generated checks


@pytest.mark.parametrize("route", V1_ROUTES, ids=lambda r: r.id)
def test_each_route_without_a_key_is_401(anonymous: TestClient, route: V1Route) -> None:
    _assert_401(_send(anonymous, route))


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-key",
        "Bearer pss_" + "0" * 32 + "_secret",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
    ],
    ids=["garbage", "unknown-id", "empty", "basic-scheme"],
)
@pytest.mark.parametrize("route", V1_ROUTES, ids=lambda r: r.id)
def test_each_route_with_an_invalid_key_is_401(
    anonymous: TestClient, route: V1Route, authorization: str
) -> None:
    _assert_401(_send(anonymous, route, {"Authorization": authorization}))


@pytest.mark.parametrize("route", V1_ROUTES, ids=lambda r: r.id)
def test_each_route_with_a_wrong_secret_for_a_real_key_is_401(
    anonymous: TestClient, admin_key: str, route: V1Route
) -> None:
    prefix, key_id, _secret = admin_key.split("_", 2)
    forged = f"{prefix}_{key_id}_{uuid.uuid4().hex}"
    _assert_401(_send(anonymous, route, _auth(forged)))


@pytest.mark.parametrize("route", V1_ROUTES, ids=lambda r: r.id)
def test_each_route_with_a_key_lacking_its_scope_is_403(
    anonymous: TestClient, keys_lacking: dict[Scope, str], route: V1Route
) -> None:
    scope = _scope_of(route)
    r = _send(anonymous, route, _auth(keys_lacking[scope]))
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    assert r.json()["status"] == 403
    assert scope.value in r.json()["detail"]


@pytest.mark.parametrize("route", V1_ROUTES, ids=lambda r: r.id)
def test_each_route_lets_a_key_with_only_its_scope_through(
    anonymous: TestClient, keys_holding: dict[Scope, str], route: V1Route
) -> None:
    r = _send(anonymous, route, _auth(keys_holding[_scope_of(route)]))
    assert r.status_code not in (401, 403), r.text
    assert r.status_code < 500, r.text


# --------------------------------------------------------------------------- rate limit


def test_the_request_over_the_rate_limit_is_429_with_retry_after(
    client: TestClient, database_url: str, data_dir: Path, admin_key: str
) -> None:
    _other_id, other_key = _new_key(client, ["read"], "second-caller")
    settings = make_settings(database_url, data_dir, rate_limit_per_minute=3)
    with TestClient(create_app(settings)) as limited:
        for _ in range(3):
            assert limited.get("/v1/patients", headers=_auth(admin_key)).status_code == 200
        r = limited.get("/v1/patients", headers=_auth(admin_key))
        assert r.status_code == 429, r.text
        assert r.headers["content-type"].startswith(PROBLEM_JSON)
        assert r.json()["status"] == 429
        retry_after = int(r.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        # The limit is per key: another caller is not throttled by the first one.
        assert limited.get("/v1/patients", headers=_auth(other_key)).status_code == 200


@pytest.fixture(scope="module")
def limited(database_url: str, data_dir: Path) -> Iterator[TestClient]:
    """The same database behind an app allowing one request a minute per key."""
    with TestClient(
        create_app(make_settings(database_url, data_dir, rate_limit_per_minute=1))
    ) as c:
        yield c


@pytest.mark.parametrize("route", V1_ROUTES, ids=lambda r: r.id)
def test_each_route_over_the_rate_limit_is_429(
    anonymous: TestClient, admin_key: str, limited: TestClient, route: V1Route
) -> None:
    admin = TestClient(anonymous.app, headers=_auth(admin_key))  # shares the running app
    _key_id, key = _new_key(admin, ["scores", "read", "write", "admin"], "limited")
    _send(limited, route, _auth(key))
    r = _send(limited, route, _auth(key))
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert r.headers["content-type"].startswith(PROBLEM_JSON)


# --------------------------------------------------------------------------- revocation


def test_a_revoked_key_stops_working_at_once_on_the_instance_that_revoked_it(
    client: TestClient,
) -> None:
    key_id, token = _new_key(client, ["read"], "to-revoke")
    assert client.get("/v1/patients", headers=_auth(token)).status_code == 200  # now cached

    r = client.delete(f"/v1/api-keys/{key_id}")
    assert r.status_code == 200, r.text
    assert r.json()["revoked_at"] is not None
    _assert_401(client.get("/v1/patients", headers=_auth(token)))


def test_a_key_revoked_elsewhere_stops_working_within_the_cache_lifetime(
    client: TestClient, database_url: str, data_dir: Path
) -> None:
    key_id, token = _new_key(client, ["read"], "revoked-elsewhere")
    ttl = 0.5
    settings = make_settings(database_url, data_dir, auth_cache_seconds=ttl)
    with TestClient(create_app(settings)) as other:
        assert other.get("/v1/patients", headers=_auth(token)).status_code == 200  # cached
        assert client.delete(f"/v1/api-keys/{key_id}").status_code == 200
        time.sleep(ttl + 0.1)
        _assert_401(other.get("/v1/patients", headers=_auth(token)))


def test_without_a_key_cache_a_key_revoked_elsewhere_is_refused_at_once(
    client: TestClient, database_url: str, data_dir: Path
) -> None:
    key_id, token = _new_key(client, ["read"], "revoked-elsewhere-now")
    settings = make_settings(database_url, data_dir, auth_cache_seconds=0)
    with TestClient(create_app(settings)) as other:
        assert other.get("/v1/patients", headers=_auth(token)).status_code == 200
        assert client.delete(f"/v1/api-keys/{key_id}").status_code == 200
        _assert_401(other.get("/v1/patients", headers=_auth(token)))
    listed = {k["id"]: k for k in client.get("/v1/api-keys").json()["items"]}
    assert listed[key_id]["revoked_at"] is not None


def test_revoking_an_unknown_key_is_404(client: TestClient) -> None:
    r = client.delete(f"/v1/api-keys/{uuid.uuid4()}")
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)


def test_a_key_name_can_be_used_once(client: TestClient) -> None:
    name = f"dup-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/api-keys", json={"name": name, "scopes": ["read"]}).status_code == 201
    r = client.post("/v1/api-keys", json={"name": name, "scopes": ["read"]})
    assert r.status_code == 409, r.text


def test_an_unknown_scope_is_422(client: TestClient) -> None:
    r = client.post("/v1/api-keys", json={"name": "x", "scopes": ["superuser"]})
    assert r.status_code == 422, r.text


# --------------------------------------------------------------------------- open and disabled


def test_scores_open_lets_scoring_through_without_a_key_but_not_patients(
    database_url: str, data_dir: Path
) -> None:
    settings = make_settings(database_url, data_dir, scores_open=True)
    with TestClient(create_app(settings)) as open_client:
        r = open_client.post("/v1/scores/pasi", json={"pasi": PASI_EXAMPLE})
        assert r.status_code == 200, r.text
        assert r.json()["pasi"] == 28.7
        r = open_client.post("/v1/scores/bsa", json={"bsa_percent": 12.5})
        assert r.status_code == 200, r.text
        r = open_client.post("/v1/scores/dlqi", json={"dlqi": {"item1": 3}})
        assert r.status_code == 200, r.text
        for route in V1_ROUTES:
            if not route.path.startswith("/v1/scores/"):
                _assert_401(_send(open_client, route))


def test_scoring_needs_a_key_by_default(anonymous: TestClient) -> None:
    _assert_401(anonymous.post("/v1/scores/pasi", json={"pasi": PASI_EXAMPLE}))


def test_auth_disabled_is_refused_in_production(database_url: str, data_dir: Path) -> None:
    with pytest.raises(ValidationError, match="AUTH_DISABLED"):
        make_settings(database_url, data_dir, auth_disabled=True, environment="production")


def test_auth_disabled_from_the_environment_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTH_DISABLED", "true")
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_production_with_auth_enabled_is_accepted(database_url: str, data_dir: Path) -> None:
    settings = make_settings(database_url, data_dir, environment="production")
    assert settings.auth_disabled is False


def test_auth_disabled_in_development_warns_at_startup(
    database_url: str, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    settings = make_settings(database_url, data_dir, auth_disabled=True)
    with TestClient(create_app(settings)) as unguarded:
        warnings = [
            r
            for r in caplog.records
            if r.levelno >= logging.WARNING and "disabled" in r.getMessage().lower()
        ]
        assert warnings, [r.getMessage() for r in caplog.records]
        assert unguarded.get("/v1/patients").status_code == 200


def test_no_auth_warning_is_logged_when_auth_is_on(
    database_url: str, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with TestClient(create_app(make_settings(database_url, data_dir))):
        pass
    assert not [r for r in caplog.records if "disabled" in r.getMessage().lower()]


# --------------------------------------------------------------------------- key storage


def test_the_bootstrap_admin_key_file_is_owner_only(
    app_client: TestClient, data_dir: Path, admin_key: str
) -> None:
    path = data_dir / BOOTSTRAP_KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    r = app_client.get("/v1/api-keys", headers=_auth(admin_key))
    assert r.status_code == 200, r.text


def test_the_bootstrap_key_is_created_only_when_there_are_no_keys(
    backend: str, tmp_path: Path
) -> None:
    with empty_database(backend, tmp_path) as url:
        migrate(url)
        first_dir = tmp_path / "first"
        with TestClient(create_app(make_settings(url, first_dir))) as fresh:
            path = first_dir / BOOTSTRAP_KEY_FILE
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            token = path.read_text().strip()
            assert token.startswith("pss_")
            r = fresh.get("/v1/api-keys", headers=_auth(token))
            assert r.status_code == 200, r.text
            (only,) = r.json()["items"]
            assert set(only["scopes"]) == {s.value for s in Scope}

        # Another instance (its own data folder) on the same, no longer empty, database.
        second_dir = tmp_path / "second"
        with TestClient(create_app(make_settings(url, second_dir))) as again:
            assert not (second_dir / BOOTSTRAP_KEY_FILE).exists()
            r = again.get("/v1/api-keys", headers=_auth(token))
            assert len(r.json()["items"]) == 1

        # A restart in the first folder keeps the file as it was.
        with TestClient(create_app(make_settings(url, first_dir))):
            assert path.read_text().strip() == token


def test_keys_are_stored_only_as_hashes(client: TestClient) -> None:
    _key_id, token = _new_key(client, ["read"], "hashed")
    secret = token.split("_", 2)[2]
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    with db.read() as session:
        rows = session.execute(text("SELECT * FROM api_keys")).all()
    stored = " ".join(str(value) for row in rows for value in row)
    assert token not in stored
    assert secret not in stored
    assert client.get("/v1/patients", headers=_auth(token)).status_code == 200


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = keys_cli(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.usefixtures("cli_env")
def test_the_cli_creates_lists_and_revokes_keys(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"

    code, out, _err = _cli(capsys, "create", name, "--scopes", "read")
    assert code == 0
    token_match = re.search(r"key \(shown once\): (pss_\S+)", out)
    id_match = re.search(r"^id: (\S+)$", out, re.MULTILINE)
    assert token_match, out
    assert id_match, out
    token, key_id = token_match.group(1), id_match.group(1)
    assert client.get("/v1/patients", headers=_auth(token)).status_code == 200
    denied = client.post(
        "/v1/patients",
        json={"identifiers": [{"system": "s", "value": "v"}]},
        headers=_auth(token),
    )
    assert denied.status_code == 403

    code, out, _err = _cli(capsys, "list")
    assert code == 0
    (line,) = [line for line in out.splitlines() if name in line]
    assert key_id in line
    assert "active" in line
    assert token not in out

    code, out, _err = _cli(capsys, "revoke", key_id)
    assert code == 0
    assert key_id in out
    # Revoked outside this app: it stops here once this worker's key cache lapses.
    time.sleep(client.app.state.runtime.settings.auth_cache_seconds + 0.1)  # type: ignore[attr-defined]
    _assert_401(client.get("/v1/patients", headers=_auth(token)))

    code, out, _err = _cli(capsys, "list")
    (line,) = [line for line in out.splitlines() if name in line]
    assert "revoked" in line


@pytest.mark.usefixtures("cli_env")
def test_the_cli_reports_errors_with_a_nonzero_exit(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = _cli(capsys, "revoke", str(uuid.uuid4()))
    assert code == 1
    assert "error" in err
    name = f"cli-dup-{uuid.uuid4().hex[:8]}"
    assert _cli(capsys, "create", name)[0] == 0
    code, _out, err = _cli(capsys, "create", name)
    assert code == 1
    assert name in err
    with pytest.raises(SystemExit):
        keys_cli(["create", "x", "--scopes", "superuser"])


# --------------------------------------------------------------------------- HTTP surface


def test_openapi_declares_bearer_auth_on_every_v1_operation(anonymous: TestClient) -> None:
    r = anonymous.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    schemes = spec["components"]["securitySchemes"]
    bearer = {
        name
        for name, scheme in schemes.items()
        if scheme.get("type") == "http" and scheme.get("scheme", "").lower() == "bearer"
    }
    assert bearer, schemes
    operations = 0
    for path, item in spec["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method, operation in item.items():
            operations += 1
            used = {name for requirement in operation.get("security", []) for name in requirement}
            assert used & bearer, f"{method.upper()} {path} does not reference bearer auth"
            assert "401" in operation["responses"], f"{method.upper()} {path}"
    assert operations == len(V1_ROUTES)


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@pytest.mark.parametrize(
    ("method", "path", "authorised"),
    [
        ("GET", "/v1/patients", True),
        ("GET", f"/v1/patients/{uuid.UUID(int=1)}", True),
        ("GET", "/v1/patients", False),
        ("POST", "/v1/patients", True),
        ("GET", "/healthz", False),
    ],
    ids=["200", "404", "401", "422", "health"],
)
def test_responses_carry_security_headers(
    client: TestClient, method: str, path: str, authorised: bool
) -> None:
    saved = None if authorised else client.headers.pop("Authorization")
    try:
        r = client.request(method, path, json={} if method == "POST" else None)
    finally:
        if saved is not None:
            client.headers["Authorization"] = saved
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value, (name, r.status_code)
    if path.startswith("/v1/"):
        assert "default-src 'none'" in r.headers["content-security-policy"]


def test_cors_is_off_by_default(client: TestClient) -> None:
    r = client.get("/v1/patients", headers={"Origin": ORIGIN})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    preflight = client.options(
        "/v1/patients",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_the_configured_origins_only(
    database_url: str, data_dir: Path, admin_key: str
) -> None:
    settings = make_settings(database_url, data_dir, cors_origins=[ORIGIN])
    with TestClient(create_app(settings)) as cors_client:
        r = cors_client.get("/v1/patients", headers={**_auth(admin_key), "Origin": ORIGIN})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ORIGIN
        preflight = cors_client.options(
            "/v1/patients",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization, Content-Type",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        other = cors_client.get(
            "/v1/patients", headers={**_auth(admin_key), "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers
