"""Every list is paginated and bounded (issue 11): treatment courses, and the histories of
assessments and treatments, come a keyset page at a time; a patient's active courses are
capped; a forged cursor is a 422."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.services import treatments
from tests.api.helpers import (
    all_pages,
    amend_body,
    new_assessment,
    new_patient,
    new_treatment,
    problem,
    treatment_body,
)


def test_a_patients_treatment_courses_come_a_page_at_a_time(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    made = [new_treatment(client, pid, f"2020-0{m}-01")["id"] for m in (3, 1, 2)]
    r = client.get(f"/v1/patients/{pid}/treatments", params={"limit": 2})
    first = r.json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    every = all_pages(client, f"/v1/patients/{pid}/treatments", {"limit": 2})
    assert [t["started_on"] for t in every] == ["2020-01-01", "2020-02-01", "2020-03-01"]
    assert sorted(t["id"] for t in every) == sorted(made)


def test_histories_come_a_page_at_a_time(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    current = new_assessment(client, pid, "2020-01-06", iga=4)
    for n in range(3):
        r = client.put(
            f"/v1/assessments/{current['id']}",
            json=amend_body(current, f"correction {n}", iga=n),
            headers={"If-Match": f'"{current["version"]}"'},
        )
        assert r.status_code == 200, r.text
        current = r.json()
    url = f"/v1/assessments/{current['id']}/history"
    page = client.get(url, params={"limit": 3}).json()
    assert [v["version"] for v in page["items"]] == [1, 2, 3]
    rest = client.get(url, params={"limit": 3, "cursor": page["next_cursor"]}).json()
    assert [v["version"] for v in rest["items"]] == [4]
    assert rest["next_cursor"] is None

    tid = new_treatment(client, pid, "2020-01-06")["id"]
    r = client.put(
        f"/v1/treatments/{tid}",
        json={**treatment_body("2020-01-06"), "reason": "dose recorded late"},
        headers={"If-Match": '"1"'},
    )
    assert r.status_code == 200, r.text
    versions = all_pages(client, f"/v1/treatments/{tid}/history", {"limit": 1})
    assert [v["version"] for v in versions] == [1, 2]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/patients/{pid}/treatments",
        "/v1/assessments/{aid}/history",
        "/v1/treatments/{tid}/history",
    ],
)
def test_a_forged_cursor_on_a_bounded_list_is_422(client: TestClient, path: str) -> None:
    pid = new_patient(client)["id"]
    aid = new_assessment(client, pid, "2020-01-06")["id"]
    tid = new_treatment(client, pid, "2020-01-06")["id"]
    r = client.get(path.format(pid=pid, aid=aid, tid=tid), params={"cursor": "WyJ4Il0"})
    body = problem(r, 422)
    assert [e["parameter"] for e in body["errors"]] == ["cursor"]


def test_a_patient_has_at_most_so_many_active_courses(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(treatments, "MAX_ACTIVE_COURSES", 2)
    pid = new_patient(client)["id"]
    first = new_treatment(client, pid, "2020-01-06")["id"]
    new_treatment(client, pid, "2020-02-03")
    r = client.post(f"/v1/patients/{pid}/treatments", json=treatment_body("2020-03-02"))
    assert "active treatment courses" in problem(r, 409)["detail"]
    # Marking a mistaken course entered-in-error makes room.
    client.delete(f"/v1/treatments/{first}", params={"reason": "duplicate"})
    r = client.post(f"/v1/patients/{pid}/treatments", json=treatment_body("2020-03-02"))
    assert r.status_code == 201, r.text


def test_a_course_holds_at_most_1000_doses(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    dose = {"given_on": "2020-01-06", "amount": 1.0, "unit": "mg"}
    r = client.post(
        f"/v1/patients/{pid}/treatments", json=treatment_body("2020-01-06", doses=[dose] * 1001)
    )
    body = problem(r, 422)
    assert any(e.get("pointer") == "/doses" for e in body["errors"]), body
