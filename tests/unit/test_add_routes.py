"""`lean_route.add_routes`: a router's routes as the app's own, without FastAPI's per-request
inclusion machinery, yet with what inclusion gives that the service relies on."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient

from app.api.lean_route import LeanRoute, add_routes


def who() -> str:
    return "real"


def _router() -> APIRouter:
    router = APIRouter(route_class=LeanRoute, prefix="/x", tags=["x"])

    @router.get("/who")
    async def ask(name: str = Depends(who)) -> dict[str, str]:
        return {"who": name}

    return router


def test_each_app_sees_only_its_own_dependency_overrides() -> None:
    router = _router()  # one router shared by two apps, as a module's router is
    first, second = FastAPI(), FastAPI()
    add_routes(first, router)
    add_routes(second, router)
    first.dependency_overrides[who] = lambda: "override"
    with TestClient(first) as one, TestClient(second) as two:
        assert one.get("/x/who").json() == {"who": "override"}
        assert two.get("/x/who").json() == {"who": "real"}
    assert "/x/who" in first.openapi()["paths"]
    assert first.openapi()["paths"]["/x/who"]["get"]["tags"] == ["x"]


def test_the_same_as_include_router_in_the_openapi_document() -> None:
    included, added = FastAPI(), FastAPI()
    included.include_router(_router())
    add_routes(added, _router())
    assert added.openapi() == included.openapi()


@pytest.mark.parametrize(
    "options",
    [
        {"dependencies": [Depends(who)]},
        {"responses": {418: {"description": "teapot"}}},
        {"deprecated": True},
    ],
)
def test_a_router_needing_inclusion_is_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="include_router"):
        add_routes(FastAPI(), APIRouter(**options))  # type: ignore[arg-type]
