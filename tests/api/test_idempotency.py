"""Idempotency-Key on writes: replay, conflicts, scope, what is not remembered, durability."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app import errors
from app.auth.access import DEV_ACCESS
from app.main import create_app
from app.schemas.records import AssessmentIn, PatientIn
from app.services import idempotency, patients
from tests.api.helpers import (
    all_pages,
    amend_body,
    assessment_body,
    bearer,
    create_api_key,
    error_locations,
    new_assessment,
    new_patient,
    patient_body,
    problem,
)
from tests.conftest import make_settings
from tests.sql_events import begun, compiled_anew

REPLAYED = "Idempotent-Replayed"


def _key(name: str) -> dict[str, str]:
    return {"Idempotency-Key": name}


def _assessments_url(patient_id: str) -> str:
    return f"/v1/patients/{patient_id}/assessments"


def _count(client: TestClient, patient_id: str) -> int:
    return len(all_pages(client, _assessments_url(patient_id), {"limit": 200}))


def _history_length(client: TestClient, assessment_id: str) -> int:
    r = client.get(f"/v1/assessments/{assessment_id}/history")
    assert r.status_code == 200, r.text
    return len(r.json()["items"])


def _assert_replay_of(first: Any, again: Any) -> None:
    assert again.status_code == first.status_code, again.text
    assert again.json() == first.json()
    assert again.headers[REPLAYED] == "true"
    for header in ("ETag", "Location"):
        assert again.headers.get(header) == first.headers.get(header)


# --- replay -----------------------------------------------------------------------------------


def test_the_same_key_and_body_replays_the_first_response_and_stores_nothing_new(
    client: TestClient,
) -> None:
    pid = new_patient(client)["id"]
    body = assessment_body("2020-01-01", visit="Week 12", iga=2)
    first = client.post(_assessments_url(pid), json=body, headers=_key("visit-12-upload"))
    assert first.status_code == 201, first.text
    assert REPLAYED not in first.headers
    for _ in range(3):
        again = client.post(_assessments_url(pid), json=body, headers=_key("visit-12-upload"))
        _assert_replay_of(first, again)
    assert _count(client, pid) == 1
    assert _history_length(client, first.json()["id"]) == 1


def _transactions(client: TestClient, request: Any) -> tuple[Any, int]:
    """The answer to `request()` and how many database transactions it began."""
    with begun(client.app.state.runtime.db.engine) as begins:  # type: ignore[attr-defined]
        answer = request()
    return answer, len(begins)


def test_a_keyed_write_compiles_no_statement_once_warm(client: TestClient) -> None:
    """Every statement of a keyed write comes from SQLAlchemy's compiled cache after the
    first such write: a dialect insert with ON CONFLICT (the claim) is never cached, and
    compiled on every request it cost a sixth of a keyed write's CPU (issue 14)."""
    pid = new_patient(client)["id"]
    engine = client.app.state.runtime.db.engine  # type: ignore[attr-defined]
    for n in range(2):
        with compiled_anew(engine) as compiled:
            answer = client.post(
                _assessments_url(pid),
                json=assessment_body(f"2020-01-0{n + 1}"),
                headers=_key(f"warm-{n}"),
            )
        assert answer.status_code == 201, answer.text
    assert compiled == []


def test_a_keyed_write_and_its_replay_are_each_one_transaction(client: TestClient) -> None:
    """Claim, work, stored answer and audit event commit together (issue 14): one commit per
    keyed request, not a claim's and then a work's; a failure leaves no claim to release."""
    pid = new_patient(client)["id"]
    body = assessment_body("2020-01-01")
    first, begun = _transactions(
        client, lambda: client.post(_assessments_url(pid), json=body, headers=_key("one-txn"))
    )
    assert first.status_code == 201, first.text
    assert begun == 1
    again, begun = _transactions(
        client, lambda: client.post(_assessments_url(pid), json=body, headers=_key("one-txn"))
    )
    _assert_replay_of(first, again)
    assert begun == 1
    missing = "/v1/patients/00000000-0000-4000-8000-000000000000/assessments"
    refused, _ = _transactions(
        client, lambda: client.post(missing, json=body, headers=_key("one-txn-404"))
    )
    problem(refused, 404)
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    retry = idempotency.claim(
        db,
        idempotency.KeyScope("bootstrap-admin", "POST", missing, "one-txn-404"),
        idempotency.request_hash(AssessmentIn.model_validate(body).model_dump(mode="json")),
        idempotency.Policy(60, timedelta(hours=48)),
    )
    assert isinstance(retry, idempotency.Claim)  # the failed request left the key free


def test_a_json_equal_body_written_differently_is_replayed(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    body = assessment_body("2020-01-01", visit="Week 12", iga=2)
    first = client.post(_assessments_url(pid), json=body, headers=_key("k-1"))
    assert first.status_code == 201, first.text
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2)
    again = client.post(
        _assessments_url(pid),
        content=reordered.encode(),
        headers={**_key("k-1"), "Content-Type": "application/json"},
    )
    _assert_replay_of(first, again)
    assert _count(client, pid) == 1


def test_creating_a_patient_again_with_the_same_key_replays_instead_of_409(
    client: TestClient,
) -> None:
    body = patient_body("S-001", birth_year=1975)
    first = client.post("/v1/patients", json=body, headers=_key("enrol-S-001"))
    assert first.status_code == 201, first.text
    again = client.post("/v1/patients", json=body, headers=_key("enrol-S-001"))
    _assert_replay_of(first, again)
    assert len(all_pages(client, "/v1/patients")) == 1
    # Without the key, the same request is a genuine second attempt: 409.
    problem(client.post("/v1/patients", json=body), 409)


def test_replaying_an_amendment_does_not_add_a_version(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    created = new_assessment(client, pid, "2020-01-01", iga=4)
    body = amend_body(created, "IGA misread", iga=3)
    headers = {**_key("amend-1"), "If-Match": '"1"'}
    first = client.put(f"/v1/assessments/{created['id']}", json=body, headers=headers)
    assert first.status_code == 200, first.text
    # The retry carries the same (now stale) If-Match: the stored answer comes back, not 412.
    again = client.put(f"/v1/assessments/{created['id']}", json=body, headers=headers)
    _assert_replay_of(first, again)
    assert _history_length(client, created["id"]) == 2
    assert client.get(f"/v1/assessments/{created['id']}").headers["ETag"] == '"2"'


def test_replaying_a_delete_does_not_add_a_version(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    created = new_assessment(client, pid, "2020-01-01")
    url = f"/v1/assessments/{created['id']}"
    first = client.request("DELETE", url, params={"reason": "dup"}, headers=_key("del-1"))
    assert first.status_code == 200, first.text
    again = client.request("DELETE", url, params={"reason": "dup"}, headers=_key("del-1"))
    _assert_replay_of(first, again)
    assert _history_length(client, created["id"]) == 2


# --- conflicts --------------------------------------------------------------------------------


def test_the_same_key_with_a_different_body_is_422_and_stores_nothing(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    body = assessment_body("2020-01-01", iga=2)
    first = client.post(_assessments_url(pid), json=body, headers=_key("k-1"))
    assert first.status_code == 201, first.text
    changed = {**body, "iga": 3}
    problem(client.post(_assessments_url(pid), json=changed, headers=_key("k-1")), 422)
    assert _count(client, pid) == 1
    # The key still answers for its first body.
    _assert_replay_of(first, client.post(_assessments_url(pid), json=body, headers=_key("k-1")))


def test_a_key_whose_first_request_is_in_flight_is_409_until_its_lease_expires(
    client: TestClient,
) -> None:
    pid = new_patient(client)["id"]
    path = _assessments_url(pid)
    body = assessment_body("2020-01-01")
    digest = idempotency.request_hash(AssessmentIn.model_validate(body).model_dump(mode="json"))
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    retention = timedelta(hours=48)

    # Another request claims the key and is still working (a 60-second lease).
    claim = idempotency.claim(
        db,
        idempotency.KeyScope("bootstrap-admin", "POST", path, "busy"),
        digest,
        idempotency.Policy(60, retention),
    )
    assert isinstance(claim, idempotency.Claim)
    problem(client.post(path, json=body, headers=_key("busy")), 409)
    assert _count(client, pid) == 0

    # A request that died with its lease run out is taken over by the retry.
    claim = idempotency.claim(
        db,
        idempotency.KeyScope("bootstrap-admin", "POST", path, "died"),
        digest,
        idempotency.Policy(0, retention),
    )
    assert isinstance(claim, idempotency.Claim)
    r = client.post(path, json=body, headers=_key("died"))
    assert r.status_code == 201, r.text
    assert _count(client, pid) == 1


# --- scope ------------------------------------------------------------------------------------


def test_a_key_names_one_request_so_reusing_it_on_another_path_is_422(
    client: TestClient,
) -> None:
    """Stripe's rule (and issue 11): a key used for one request cannot run another, whether
    the other is another patient's assessments or another endpoint; nothing new is stored."""
    first_patient = new_patient(client, "S-1")["id"]
    second_patient = new_patient(client, "S-2")["id"]
    body = assessment_body("2020-01-01")
    a = client.post(_assessments_url(first_patient), json=body, headers=_key("week-0"))
    assert a.status_code == 201, a.text
    b = client.post(_assessments_url(second_patient), json=body, headers=_key("week-0"))
    problem(b, 422)
    assert "another request" in b.json()["detail"]
    c = client.post("/v1/patients", json=patient_body("S-3"), headers=_key("week-0"))
    problem(c, 422)
    assert _count(client, first_patient) == 1
    assert _count(client, second_patient) == 0
    # The key still answers for its own request.
    _assert_replay_of(
        a, client.post(_assessments_url(first_patient), json=body, headers=_key("week-0"))
    )


def test_a_key_names_one_method_too(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    created = new_assessment(client, pid, "2020-01-01", iga=4)
    url = f"/v1/assessments/{created['id']}"
    put = client.put(
        url, json=amend_body(created, "IGA", iga=3), headers={**_key("same"), "If-Match": '"1"'}
    )
    assert put.status_code == 200, put.text
    delete = client.request("DELETE", url, params={"reason": "dup"}, headers=_key("same"))
    problem(delete, 422)
    assert client.get(url).json()["status"] == "active"


def test_every_spelling_of_one_patient_id_is_one_request_for_a_key(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    body = assessment_body("2020-01-01")
    spellings = [pid, pid.upper(), pid.replace("-", ""), "{" + pid + "}", "urn:uuid:" + pid]
    answers = [
        client.post(f"/v1/patients/{s}/assessments", json=body, headers=_key("one-visit"))
        for s in spellings
    ]
    accepted = [r for r in answers if r.status_code < 300]
    assert accepted, [r.text for r in answers]
    assert accepted[0].status_code == 201
    assert len(accepted) >= 3  # the spellings the UUID parser accepts: one request for all
    assert all(r.headers.get(REPLAYED) == "true" for r in accepted[1:])
    assert _count(client, pid) == 1


def test_another_api_key_using_the_same_idempotency_key_is_independent(
    client: TestClient,
) -> None:
    pid = new_patient(client)["id"]
    body = assessment_body("2020-01-01")
    mine = client.post(_assessments_url(pid), json=body, headers=_key("k-1"))
    assert mine.status_code == 201, mine.text
    _name, token = create_api_key(client, "other-integration")
    theirs = client.post(_assessments_url(pid), json=body, headers={**_key("k-1"), **bearer(token)})
    assert theirs.status_code == 201, theirs.text
    assert REPLAYED not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]
    assert _count(client, pid) == 2


# --- what is not remembered -------------------------------------------------------------------


def test_a_validation_failure_is_not_remembered(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    bad = assessment_body("2020-01-01", iga=9)
    problem(client.post(_assessments_url(pid), json=bad, headers=_key("k-1")), 422)
    good = assessment_body("2020-01-01", iga=3)
    r = client.post(_assessments_url(pid), json=good, headers=_key("k-1"))
    assert r.status_code == 201, r.text
    assert REPLAYED not in r.headers
    assert _count(client, pid) == 1


def test_a_not_found_failure_is_not_remembered(client: TestClient) -> None:
    path = _assessments_url("00000000-0000-4000-8000-000000000000")
    body = assessment_body("2020-01-01")
    problem(client.post(path, json=body, headers=_key("k-1")), 404)
    again = client.post(path, json=body, headers=_key("k-1"))
    problem(again, 404)
    assert REPLAYED not in again.headers
    # Had the key been kept, a different body would now be 422 (key reused).
    problem(client.post(path, json={**body, "iga": 1}, headers=_key("k-1")), 404)


def test_a_conflict_is_not_remembered(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    old = client.post(_assessments_url(pid), json=assessment_body("2019-12-01", is_baseline=True))
    assert old.status_code == 201, old.text
    body = assessment_body("2020-01-01", is_baseline=True)
    problem(client.post(_assessments_url(pid), json=body, headers=_key("new-baseline")), 409)

    unflag = client.put(
        f"/v1/assessments/{old.json()['id']}",
        json=amend_body(old.json(), "not the baseline", is_baseline=False),
        headers={"If-Match": old.headers["ETag"]},
    )
    assert unflag.status_code == 200, unflag.text
    retry = client.post(_assessments_url(pid), json=body, headers=_key("new-baseline"))
    assert retry.status_code == 201, retry.text
    assert REPLAYED not in retry.headers
    assert retry.json()["is_baseline"] is True


def test_a_precondition_failure_is_not_remembered(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    created = new_assessment(client, pid, "2020-01-01", iga=4)
    url = f"/v1/assessments/{created['id']}"
    body = amend_body(created, "IGA misread", iga=3)
    problem(client.put(url, json=body, headers={**_key("fix"), "If-Match": '"7"'}), 412)
    r = client.put(url, json=body, headers={**_key("fix"), "If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.json()["iga"] == 3


# --- the key itself ---------------------------------------------------------------------------


def test_a_key_longer_than_255_characters_is_422(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    body = assessment_body("2020-01-01")
    answer = problem(client.post(_assessments_url(pid), json=body, headers=_key("k" * 256)), 422)
    assert "Idempotency-Key" in error_locations(answer)
    assert _count(client, pid) == 0
    first = client.post(_assessments_url(pid), json=body, headers=_key("k" * 255))
    assert first.status_code == 201, first.text
    _assert_replay_of(first, client.post(_assessments_url(pid), json=body, headers=_key("k" * 255)))


def test_an_empty_key_is_422(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    problem(
        client.post(_assessments_url(pid), json=assessment_body("2020-01-01"), headers=_key("")),
        422,
    )
    assert _count(client, pid) == 0


@pytest.mark.parametrize(
    "key", ["a1b2c3", "0f8fad5b-d9cb-469f-a165-70867728950e", "k:with/sym=bols"]
)
def test_keys_of_any_printable_form_work(client: TestClient, key: str) -> None:
    pid = new_patient(client)["id"]
    body = assessment_body("2020-01-01")
    first = client.post(_assessments_url(pid), json=body, headers=_key(key))
    assert first.status_code == 201, first.text
    _assert_replay_of(first, client.post(_assessments_url(pid), json=body, headers=_key(key)))


def test_keys_survive_a_new_app_instance(
    client: TestClient, database_url: str, data_dir: Path, admin_key: str
) -> None:
    pid = new_patient(client)["id"]
    body = assessment_body("2020-01-01", visit="Week 4")
    first = client.post(_assessments_url(pid), json=body, headers=_key("before-restart"))
    assert first.status_code == 201, first.text

    with TestClient(create_app(make_settings(database_url, data_dir))) as fresh:
        fresh.headers.update(bearer(admin_key))
        again = fresh.post(_assessments_url(pid), json=body, headers=_key("before-restart"))
        _assert_replay_of(first, again)
        problem(
            fresh.post(
                _assessments_url(pid), json={**body, "iga": 1}, headers=_key("before-restart")
            ),
            422,
        )
    assert _count(client, pid) == 1


# --- fencing ----------------------------------------------------------------------------------


def test_a_request_that_outlived_its_lease_cannot_store_its_work_after_a_retry_took_over(
    client: TestClient,
) -> None:
    """Kleppmann's fencing token: the first claim's lease runs out (a lock wait, a slow disk), a
    retry takes the key over with a new token; when the first request then tries to finish, its
    answer and its work roll back together, and the retry's answer is the one that stands."""
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    retention = timedelta(hours=48)
    scope = idempotency.KeyScope("bootstrap-admin", "POST", "/v1/patients", "slow-disk")
    digest = idempotency.request_hash({"identifiers": "x"})
    first = idempotency.claim(db, scope, digest, idempotency.Policy(0, retention))
    retry = idempotency.claim(db, scope, digest, idempotency.Policy(60, retention))
    assert isinstance(first, idempotency.Claim)
    assert isinstance(retry, idempotency.Claim)
    assert retry.claim_id == first.claim_id
    assert retry.token != first.token

    def work(session: Any, value: str) -> idempotency.StoredResponse:
        out = patients.create_patient(
            session, DEV_ACCESS, PatientIn.model_validate(patient_body(value))
        )
        return idempotency.StoredResponse(201, out.model_dump_json(), {})

    with pytest.raises(errors.IdempotencyInFlight), db.transaction() as session:
        idempotency.complete(session, first, work(session, "late"))
    idempotency.release(db, first)  # the loser's clean-up leaves the retry's claim alone
    with db.transaction() as session:
        idempotency.complete(session, retry, work(session, "retry"))

    listed = client.get("/v1/patients").json()["items"]
    assert [p["identifiers"][0]["value"] for p in listed] == ["retry"]
    stored = idempotency.claim(db, scope, digest, idempotency.Policy(60, retention))
    assert isinstance(stored, idempotency.StoredResponse)
    assert stored.status == 201


def test_a_stored_answer_cannot_be_taken_over_even_after_its_lease(client: TestClient) -> None:
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    retention = timedelta(hours=48)
    scope = idempotency.KeyScope("bootstrap-admin", "POST", "/v1/patients", "done")
    digest = idempotency.request_hash({"n": 1})
    claimed = idempotency.claim(db, scope, digest, idempotency.Policy(0, retention))
    assert isinstance(claimed, idempotency.Claim)
    with db.transaction() as session:
        idempotency.complete(session, claimed, idempotency.StoredResponse(201, "{}", {}))
    again = idempotency.claim(db, scope, digest, idempotency.Policy(60, retention))
    assert isinstance(again, idempotency.StoredResponse)
