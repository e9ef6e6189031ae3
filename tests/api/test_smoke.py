from fastapi.testclient import TestClient

from app.schemas.scores import PASI_EXAMPLE


def test_scoring_the_spec_example_gives_28_7(client: TestClient) -> None:
    r = client.post("/v1/scores/pasi", json={"pasi": PASI_EXAMPLE, "iga": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pasi"] == 28.7
    assert body["pasi_regions"] == {
        "head_neck": 1.4,
        "upper_limbs": 4.8,
        "trunk": 8.1,
        "lower_limbs": 14.4,
    }
