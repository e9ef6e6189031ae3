"""Cursors are opaque, but a client can forge one: any JSON in any slot of any list's cursor is
a 422 naming `cursor` (or, when it happens to decode to a valid position, a 200), never a 500."""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.helpers import new_assessment, new_patient

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(
        ["2020-01-01", "2020-01-01T00:00:00+00:00", "00000000-0000-4000-8000-000000000001"]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)

# Each list and the number of slots its cursor has.
LISTS = {
    "patients": ("/v1/patients", 2),
    "assessments": ("/v1/patients/{pid}/assessments", 3),
    "audit": ("/v1/audit-events", 1),
    "organizations": ("/v1/organizations", 2),
}


def _cursor(values: Any) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    which=st.sampled_from(sorted(LISTS)),
    slots=st.lists(json_values, min_size=0, max_size=4),
)
def test_any_json_in_any_cursor_slot_is_422_or_a_page_never_500(
    client: TestClient, which: str, slots: list[Any]
) -> None:
    path, size = LISTS[which]
    if "{pid}" in path:
        found = client.get("/v1/patients").json()["items"]
        pid = found[0]["id"] if found else new_patient(client, "fuzz")["id"]
        if not found:
            new_assessment(client, pid, "2020-01-06")
        path = path.format(pid=pid)
    # Mostly the right number of slots, so each slot's own check is what is exercised.
    values = (slots + [None] * size)[:size] if len(slots) != 0 else slots
    r = client.get(path, params={"cursor": _cursor(values)})
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert [e["parameter"] for e in r.json()["errors"]] == ["cursor"]
