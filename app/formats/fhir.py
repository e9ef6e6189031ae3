"""FHIR R4 (4.0.1) resources for the service's records, and the one parser FHIR clients post.

Pure dict builders (stdlib and the scoring core only) so the `/fhir` facade, exports and tests
share one mapping and it can be checked against HL7's JSON schema without a server.

No LOINC code for PASI is known, and LOINC 8277-6 is body surface area in m², not % of skin
involved, so the service owns a code system (`CODE_SYSTEM_URL`) for PASI and its parts.

The PASI Observation of one assessment version:

| assessment                  | Observation                                                    |
|-----------------------------|----------------------------------------------------------------|
| id, version, updated_at     | `id`, `meta.versionId`, `meta.lastUpdated`                     |
| status / amended            | `status`: entered-in-error, else amended, else final           |
| patient_id                  | `subject.reference` `Patient/{id}`                             |
| assessed_on                 | `effectiveDateTime` (a date)                                   |
| recorded_at                 | `issued`                                                       |
| scores.pasi                 | `valueQuantity` (UCUM `{score}`)                               |
| region signs and area score | `component` `pasi-<region>-<sign>` / `-area-score`, valueInteger |
| region area percent         | `component` `pasi-<region>-area-percent`, valueQuantity `%`    |
| bsa_percent (measured)      | `component` `bsa-percent`, valueQuantity `%`                   |
| iga                         | `component` `iga`, valueInteger                                |
| scores.pga_x_bsa            | `component` `pga-x-bsa`, valueQuantity `{score}` (derived)     |
| dlqi items                  | `component` `dlqi-item-N` valueInteger, item 7 as              |
|                             | `dlqi-item-7-prevented` valueBoolean + `dlqi-item-7-problem`;  |
|                             | unanswered: `dataAbsentReason` (no DLQI text is shipped)       |
| scores.dlqi                 | `component` `dlqi`, valueInteger (derived, when a total exists) |
| visit                       | `extension` `VISIT_EXTENSION_URL`, valueString                 |
| is_baseline                 | `extension` `BASELINE_EXTENSION_URL`, valueBoolean             |
| assessor                    | `performer[0].display` (a name, not a resolvable reference)    |
| notes                       | `note[0].text`                                                 |
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final, Literal

from app.scoring.errors import ScoringInputError
from app.scoring.pasi import Region, area_score_for_percent

__all__ = [
    "BASELINE_EXTENSION_URL",
    "CODE_SYSTEM_ID",
    "CODE_SYSTEM_URL",
    "DEFINITIONS_DATE",
    "FHIR_VERSION",
    "ISSUE_TYPES",
    "ISSUE_TYPE_FOR_STATUS",
    "PASI_CODE",
    "VISIT_EXTENSION_URL",
    "AssessmentRecord",
    "FhirInputError",
    "OutcomeIssue",
    "ParsedObservation",
    "assessment_observation",
    "bundle_history",
    "bundle_searchset",
    "capability_statement",
    "code_system",
    "observation_to_assessment",
    "operation_outcome",
    "operation_outcome_issues",
    "parse_observation",
    "patient_resource",
]

FHIR_VERSION: Final = "4.0.1"
_SITE: Final = "https://psoriasis-scoring.dev/fhir"
CODE_SYSTEM_ID: Final = "psoriasis-severity"
CODE_SYSTEM_URL: Final = f"{_SITE}/CodeSystem/{CODE_SYSTEM_ID}"
# Our own extensions: FHIR Observation has no element for a trial visit label or a baseline flag.
VISIT_EXTENSION_URL: Final = f"{_SITE}/StructureDefinition/visit-label"
BASELINE_EXTENSION_URL: Final = f"{_SITE}/StructureDefinition/baseline"
# When the CodeSystem and CapabilityStatement last changed (CapabilityStatement.date is required).
DEFINITIONS_DATE: Final = "2026-12-01"
PASI_CODE: Final = "pasi"

_UCUM: Final = "http://unitsofmeasure.org"
_CATEGORY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
_ABSENT_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
_PAPER: Final = "Fredriksson & Pettersson, Dermatologica 1978"
_SIGN_SCALE: Final = "0 none, 1 slight, 2 moderate, 3 marked, 4 very marked"
_AREA_SCALE: Final = (
    "0: 0 %, 1: < 10 %, 2: 10-< 30 %, 3: 30-< 50 %, 4: 50-< 70 %, 5: 70-< 90 %, 6: 90-100 %"
)
_DLQI_NOTE: Final = (
    "The DLQI (Finlay & Khan 1994) is © Cardiff University; its item text is not reproduced."
)

# ---------------------------------------------------------------------------------------------
# The code system: one table drives the CodeSystem, the components served and the parser.

_Kind = Literal["integer", "percent", "boolean", "score"]


@dataclass(frozen=True, slots=True)
class _Concept:
    """A code, how its value travels (value[x] type) and where it sits in the assessment body.

    `path` is empty for derived values (the service recomputes them from the inputs).
    """

    code: str
    display: str
    definition: str
    kind: _Kind
    path: tuple[str, ...] = ()


_REGION_NAMES: Final[Mapping[Region, str]] = {
    Region.HEAD_NECK: "head and neck",
    Region.UPPER_LIMBS: "upper limbs",
    Region.TRUNK: "trunk (axillae and genitalia included)",
    Region.LOWER_LIMBS: "lower limbs (buttocks included)",
}
_REGION_WEIGHTS: Final[Mapping[Region, str]] = {
    Region.HEAD_NECK: "0.1",
    Region.UPPER_LIMBS: "0.2",
    Region.TRUNK: "0.3",
    Region.LOWER_LIMBS: "0.4",
}
_SIGNS: Final[tuple[tuple[str, str], ...]] = (
    ("erythema", "erythema (redness)"),
    ("induration", "induration (thickness)"),
    ("desquamation", "desquamation (scaling)"),
)
# Body fields of DLQI answers, in item order, with their code suffix.
_DLQI_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("item1", "1"),
    ("item2", "2"),
    ("item3", "3"),
    ("item4", "4"),
    ("item5", "5"),
    ("item6", "6"),
    ("item7_prevented", "7-prevented"),
    ("item7_problem", "7-problem"),
    ("item8", "8"),
    ("item9", "9"),
    ("item10", "10"),
)


def _slug(region: Region) -> str:
    return region.value.replace("_", "-")


def _region_concepts(region: Region) -> list[_Concept]:
    name, slug, key = _REGION_NAMES[region], _slug(region), region.value
    short = name.split(" (")[0]
    concepts = [
        _Concept(
            f"pasi-{slug}-{sign}",
            f"PASI {short} {sign}",
            f"Severity of {label} of the {name} for PASI, an integer 0-4 ({_SIGN_SCALE}); "
            f"{_PAPER}.",
            "integer",
            ("pasi", key, sign),
        )
        for sign, label in _SIGNS
    ]
    concepts.append(
        _Concept(
            f"pasi-{slug}-area-score",
            f"PASI {short} area score",
            f"Area of the {name} involved as a PASI score 0-6 ({_AREA_SCALE}); {_PAPER}. "
            "Derived from the area percent when one is given.",
            "integer",
            ("pasi", key, "area_score"),
        )
    )
    concepts.append(
        _Concept(
            f"pasi-{slug}-area-percent",
            f"PASI {short} area percent",
            f"Percent of the {name} (not of the whole body) involved, 0-100 %, from which the "
            f"PASI area score is read; {_PAPER}.",
            "percent",
            ("pasi", key, "area_percent"),
        )
    )
    return concepts


def _dlqi_concept(body_field: str, suffix: str) -> _Concept:
    path = ("dlqi", body_field)
    if suffix == "7-prevented":
        return _Concept(
            "dlqi-item-7-prevented",
            "DLQI item 7, first part",
            'First part of DLQI item 7: true for "yes" (the item scores 3), false for "no". '
            + _DLQI_NOTE,
            "boolean",
            path,
        )
    if suffix == "7-problem":
        return _Concept(
            "dlqi-item-7-problem",
            "DLQI item 7, second part",
            'Second part of DLQI item 7, only after "no": a lot 2, a little 1, not at all 0. '
            + _DLQI_NOTE,
            "integer",
            path,
        )
    return _Concept(
        f"dlqi-item-{suffix}",
        f"DLQI item {suffix}",
        f"Score of DLQI item {suffix}, 0-3 (very much 3, a lot 2, a little 1, not at all 0, "
        f"not relevant 0). {_DLQI_NOTE}",
        "integer",
        path,
    )


_PASI_CONCEPT: Final = _Concept(
    PASI_CODE,
    "Psoriasis Area and Severity Index (PASI)",
    "PASI, 0-72: the sum over head and neck (weight 0.1), upper limbs (0.2), trunk (0.3) and "
    "lower limbs (0.4) of weight x (erythema + induration + desquamation) x area score; "
    f"{_PAPER}.",
    "score",
)

# Component concepts, in the order they are served.
_COMPONENTS: Final[tuple[_Concept, ...]] = (
    *(c for region in Region for c in _region_concepts(region)),
    _Concept(
        "bsa-percent",
        "Body surface area involved (%)",
        "Measured percent of the whole body surface involved, 0-100 % (the patient's whole "
        "hand, palm and fingers, is about 1 %). Not LOINC 8277-6, which is body surface area "
        "in m².",
        "percent",
        ("bsa_percent",),
    ),
    _Concept(
        "iga",
        "Investigator's Global Assessment (IGA/sPGA)",
        "Investigator's / static Physician's Global Assessment, an integer 0-4 (0 clear, "
        "1 almost clear, 2 mild, 3 moderate, 4 severe).",
        "integer",
        ("iga",),
    ),
    _Concept(
        "pga-x-bsa",
        "PGA x BSA",
        "Product of the 0-4 IGA and BSA %, 0-400 (Walsh et al., J Am Acad Dermatol 2013); "
        "derived by the service.",
        "score",
    ),
    *(_dlqi_concept(body_field, suffix) for body_field, suffix in _DLQI_FIELDS),
    _Concept(
        "dlqi",
        "Dermatology Life Quality Index (DLQI) total",
        "DLQI total 0-30, absent when two or more items are unanswered (one unanswered item "
        f"scores 0); derived by the service. {_DLQI_NOTE}",
        "integer",
    ),
)
_BY_CODE: Final[Mapping[str, _Concept]] = {c.code: c for c in _COMPONENTS}
_BY_PATH: Final[Mapping[tuple[str, ...], _Concept]] = {c.path: c for c in _COMPONENTS if c.path}


def code_system() -> dict[str, Any]:
    """The service's CodeSystem for PASI, its regions, signs and areas, BSA, IGA and DLQI."""
    concepts = [_PASI_CONCEPT, *_COMPONENTS]
    return {
        "resourceType": "CodeSystem",
        "id": CODE_SYSTEM_ID,
        "url": CODE_SYSTEM_URL,
        "version": "1.0.0",
        "name": "PsoriasisSeverity",
        "title": "Psoriasis severity scores and their inputs",
        "status": "active",
        "experimental": False,
        "date": DEFINITIONS_DATE,
        "description": (
            "Codes for PASI (Fredriksson & Pettersson 1978) and its inputs per region, BSA %, "
            "IGA, PGA x BSA and DLQI items and total, owned by this service because no LOINC "
            "code for PASI is known. " + _DLQI_NOTE
        ),
        "caseSensitive": True,
        "content": "complete",
        "count": len(concepts),
        "concept": [
            {"code": c.code, "display": c.display, "definition": c.definition} for c in concepts
        ],
    }


# ---------------------------------------------------------------------------------------------
# Assessment -> Observation


@dataclass(frozen=True, slots=True)
class AssessmentRecord:
    """One stored assessment version, as the mapper needs it (no ORM or pydantic types).

    `amended` is True once the content was amended (version > 1 for an active record; marking
    entered-in-error also adds a version, so the caller says which). `updated_at` defaults to
    `recorded_at` for `meta.lastUpdated`.
    """

    id: str
    patient_id: str
    version: int
    amended: bool
    entered_in_error: bool
    recorded_at: datetime
    content: Mapping[str, Any]
    scores: Mapping[str, Any]
    updated_at: datetime | None = None


def _instant(moment: datetime) -> str:
    """FHIR instant in UTC; a naive datetime is a caller's bug, not a time to guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a FHIR instant needs an aware datetime")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _coding(concept: _Concept) -> dict[str, Any]:
    return {"system": CODE_SYSTEM_URL, "code": concept.code, "display": concept.display}


def _quantity(value: float | int, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": _UCUM, "code": unit}


def _component(concept: _Concept, value: Any, absent: str = "unknown") -> dict[str, Any]:
    """A component carrying `value` as the value[x] type of its concept; None is unanswered."""
    out: dict[str, Any] = {"code": {"coding": [_coding(concept)]}}
    if value is None:
        out["dataAbsentReason"] = {"coding": [{"system": _ABSENT_SYSTEM, "code": absent}]}
    elif concept.kind == "integer":
        out["valueInteger"] = value
    elif concept.kind == "boolean":
        out["valueBoolean"] = value
    else:
        out["valueQuantity"] = _quantity(value, "%" if concept.kind == "percent" else "{score}")
    return out


def _area_score(percent: float | int) -> int:
    return area_score_for_percent(Decimal(repr(percent)))


def _components(content: Mapping[str, Any], scores: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for region in Region:
        given = content["pasi"][region.value]
        key = region.value
        for sign, _label in _SIGNS:
            out.append(_component(_BY_PATH["pasi", key, sign], given[sign]))
        percent = given.get("area_percent")
        score = given.get("area_score") if percent is None else _area_score(percent)
        out.append(_component(_BY_PATH["pasi", key, "area_score"], score))
        if percent is not None:
            out.append(_component(_BY_PATH["pasi", key, "area_percent"], percent))
    for name in ("bsa_percent", "iga"):
        if content.get(name) is not None:
            out.append(_component(_BY_PATH[(name,)], content[name]))
    if scores.get("pga_x_bsa") is not None:
        out.append(_component(_BY_CODE["pga-x-bsa"], scores["pga_x_bsa"]))
    dlqi = content.get("dlqi")
    if dlqi is not None:
        for body_field, _suffix in _DLQI_FIELDS:
            # "yes" to item 7's first part skips the second: not unanswered, not applicable.
            skipped = body_field == "item7_problem" and dlqi.get("item7_prevented") is True
            absent = "not-applicable" if skipped else "unknown"
            out.append(_component(_BY_PATH["dlqi", body_field], dlqi.get(body_field), absent))
        if scores.get("dlqi") is not None:
            out.append(_component(_BY_CODE["dlqi"], scores["dlqi"]))
    return out


def _status(record: AssessmentRecord) -> str:
    if record.entered_in_error:
        return "entered-in-error"
    return "amended" if record.amended else "final"


def assessment_observation(record: AssessmentRecord) -> dict[str, Any]:
    """The PASI Observation of one assessment version: every input travels, so posting it back
    (`observation_to_assessment`) gives the same content and therefore the same scores."""
    content = record.content
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": record.id,
        "meta": {
            "versionId": str(record.version),
            "lastUpdated": _instant(record.updated_at or record.recorded_at),
        },
    }
    extensions: list[dict[str, Any]] = []
    if content.get("visit") is not None:
        extensions.append({"url": VISIT_EXTENSION_URL, "valueString": content["visit"]})
    extensions.append(
        {"url": BASELINE_EXTENSION_URL, "valueBoolean": bool(content.get("is_baseline"))}
    )
    obs["extension"] = extensions
    obs["status"] = _status(record)
    obs["category"] = [
        {"coding": [{"system": _CATEGORY_SYSTEM, "code": "survey", "display": "Survey"}]}
    ]
    obs["code"] = {"coding": [_coding(_PASI_CONCEPT)], "text": "PASI"}
    obs["subject"] = {"reference": f"Patient/{record.patient_id}"}
    obs["effectiveDateTime"] = content["assessed_on"]
    obs["issued"] = _instant(record.recorded_at)
    if content.get("assessor") is not None:
        obs["performer"] = [{"display": content["assessor"]}]
    obs["valueQuantity"] = _quantity(record.scores["pasi"], "{score}")
    # FHIR strings cannot be empty: empty notes travel as no note (and come back as null).
    if content.get("notes"):
        obs["note"] = [{"text": content["notes"]}]
    obs["component"] = _components(content, record.scores)
    return obs


# ---------------------------------------------------------------------------------------------
# Observation -> assessment body


class FhirInputError(ValueError):
    """A posted resource the mapping cannot read; `expression` is the FHIRPath of the element."""

    expression: str
    diagnostics: str

    def __init__(self, expression: str, diagnostics: str) -> None:
        super().__init__(f"{expression}: {diagnostics}")
        self.expression = expression
        self.diagnostics = diagnostics

    def __reduce__(self) -> tuple[type[FhirInputError], tuple[str, str]]:
        return (type(self), (self.expression, self.diagnostics))


@dataclass(frozen=True, slots=True)
class ParsedObservation:
    """A posted Observation read as an assessment body, remembering where each field came from
    so that the request model's JSON pointers can be reported as FHIRPath expressions."""

    patient_id: str
    body: dict[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)

    def expression(self, pointer: str) -> str:
        """FHIRPath of the element behind a JSON pointer into `body` (longest known prefix)."""
        probe = pointer
        while probe:
            if probe in self.sources:
                return self.sources[probe]
            probe = probe.rpartition("/")[0]
        return "Observation"


# Elements a PASI Observation may carry. Anything else would be silently lost, so it is refused.
_KNOWN_ELEMENTS: Final = frozenset(
    {
        "resourceType",
        "id",  # server-assigned on create: ignored
        "meta",  # ignored
        "text",  # narrative: ignored
        "language",
        "extension",  # ours are read; others ignored, as FHIR allows for non-modifier ones
        "status",
        "category",
        "code",
        "subject",
        "effectiveDateTime",
        "issued",  # the server records its own time
        "performer",
        "valueQuantity",  # the PASI: recomputed from the components
        "note",
        "component",
    }
)
_COMPONENT_ELEMENTS: Final = frozenset({"id", "extension", "code", "dataAbsentReason"})
_ACCEPTED_STATUS: Final = frozenset({"final", "amended", "corrected"})
_VALUE_KEY: Final[Mapping[_Kind, str]] = {
    "integer": "valueInteger",
    "boolean": "valueBoolean",
    "percent": "valueQuantity",
    "score": "valueQuantity",
}
_PATIENT_REFERENCE: Final = re.compile(r"Patient/([A-Za-z0-9\-.]{1,64})")
_DATE: Final = re.compile(r"(\d{4}-\d{2}-\d{2})")
_DATE_TIME: Final = re.compile(
    r"(\d{4}-\d{2}-\d{2})T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?"
    r"(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00))"
)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise FhirInputError(where, "must be a JSON object")
    return value


def _array(value: object, where: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise FhirInputError(where, "must be a non-empty JSON array")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise FhirInputError(where, "must be a JSON string")
    return value


def _only(where: str, element: Mapping[str, Any], allowed: AbstractSet[str], why: str) -> None:
    """Refuse elements outside `allowed` (a `_name` primitive extension follows `name`)."""
    for key in element:
        if key not in allowed and key.lstrip("_") not in allowed:
            raise FhirInputError(f"{where}.{key}", why)


def _single(value: object, where: str, what: str) -> Mapping[str, Any]:
    items = _array(value, where)
    if len(items) > 1:
        raise FhirInputError(f"{where}[1]", f"only one {what} is kept")
    return _object(items[0], f"{where}[0]")


def _check_code(resource: Mapping[str, Any]) -> None:
    code = _object(resource.get("code"), "Observation.code")
    codings = code.get("coding")
    if not isinstance(codings, list) or len(codings) != 1:
        raise FhirInputError(
            "Observation.code.coding",
            f"must hold exactly one coding: system {CODE_SYSTEM_URL}, code {PASI_CODE}",
        )
    coding = _object(codings[0], "Observation.code.coding[0]")
    if coding.get("system") != CODE_SYSTEM_URL:
        raise FhirInputError("Observation.code.coding[0].system", f"must be {CODE_SYSTEM_URL}")
    if coding.get("code") != PASI_CODE:
        raise FhirInputError("Observation.code.coding[0].code", f"must be {PASI_CODE}")


def _patient_id(resource: Mapping[str, Any]) -> str:
    subject = _object(resource.get("subject"), "Observation.subject")
    reference = subject.get("reference")
    match = _PATIENT_REFERENCE.fullmatch(reference) if isinstance(reference, str) else None
    if match is None:
        raise FhirInputError(
            "Observation.subject.reference", "must be a relative reference Patient/{id}"
        )
    return match.group(1)


def _assessed_on(resource: Mapping[str, Any]) -> str:
    """A full date; a dateTime with time and zone gives its date as written (the assessor's
    local calendar day, never shifted to UTC). Partial dates cannot be scored by visit day."""
    where = "Observation.effectiveDateTime"
    if "effectiveDateTime" not in resource:
        raise FhirInputError(where, "is required: the date of the assessment")
    value = _string(resource["effectiveDateTime"], where)
    match = _DATE.fullmatch(value) or _DATE_TIME.fullmatch(value)
    if match is None:
        raise FhirInputError(where, "must be a full date YYYY-MM-DD (or a dateTime with zone)")
    try:
        date.fromisoformat(match.group(1))
    except ValueError:
        raise FhirInputError(where, "must be a real calendar date") from None
    return match.group(1)


def _extensions(resource: Mapping[str, Any], sources: dict[str, str]) -> tuple[str | None, bool]:
    visit: str | None = None
    baseline = False
    if "extension" not in resource:
        return visit, baseline
    seen: set[str] = set()
    for i, raw in enumerate(_array(resource["extension"], "Observation.extension")):
        where = f"Observation.extension[{i}]"
        ext = _object(raw, where)
        url = ext.get("url")
        if url not in (VISIT_EXTENSION_URL, BASELINE_EXTENSION_URL):
            continue  # not ours, not a modifier: FHIR lets a receiver ignore it
        if url in seen:
            raise FhirInputError(where, f"repeats the extension {url}")
        seen.add(url)
        if url == VISIT_EXTENSION_URL:
            visit = _string(ext.get("valueString"), f"{where}.valueString")
            sources["/visit"] = f"{where}.valueString"
        else:
            flag = ext.get("valueBoolean")
            if not isinstance(flag, bool):
                raise FhirInputError(f"{where}.valueBoolean", "must be true or false")
            baseline = flag
            sources["/is_baseline"] = f"{where}.valueBoolean"
    return visit, baseline


_LOST: Final = "is not kept by this service, so it is refused rather than lost"


def _assessor(resource: Mapping[str, Any], sources: dict[str, str]) -> str | None:
    if "performer" not in resource:
        return None
    performer = _single(resource["performer"], "Observation.performer", "performer")
    where = "Observation.performer[0]"
    _only(where, performer, {"display", "id", "extension"}, _LOST + " (only display is kept)")
    sources["/assessor"] = f"{where}.display"
    return _string(performer.get("display"), f"{where}.display")


def _notes(resource: Mapping[str, Any], sources: dict[str, str]) -> str | None:
    if "note" not in resource:
        return None
    note = _single(resource["note"], "Observation.note", "note")
    where = "Observation.note[0]"
    _only(where, note, {"text", "id", "extension"}, _LOST + " (only text is kept)")
    sources["/notes"] = f"{where}.text"
    return _string(note.get("text"), f"{where}.text")


def _component_concept(comp: Mapping[str, Any], where: str) -> _Concept:
    code = _object(comp.get("code"), f"{where}.code")
    codings = code.get("coding")
    if not isinstance(codings, list) or len(codings) != 1:
        raise FhirInputError(f"{where}.code.coding", "must hold exactly one coding")
    coding = _object(codings[0], f"{where}.code.coding[0]")
    if coding.get("system") != CODE_SYSTEM_URL:
        raise FhirInputError(f"{where}.code.coding[0].system", f"must be {CODE_SYSTEM_URL}")
    code_value = coding.get("code")
    concept = _BY_CODE.get(code_value) if isinstance(code_value, str) else None
    if concept is None:
        raise FhirInputError(
            f"{where}.code.coding[0].code",
            f"is not a component code of {CODE_SYSTEM_URL} (see CodeSystem/{CODE_SYSTEM_ID})",
        )
    return concept


def _quantity_number(raw: object, where: str, unit: str) -> float | int:
    quantity = _object(raw, where)
    if "comparator" in quantity:
        raise FhirInputError(f"{where}.comparator", "must be absent: the value is exact")
    if "system" in quantity and quantity["system"] != _UCUM:
        raise FhirInputError(f"{where}.system", f"must be {_UCUM}")
    if "code" in quantity and quantity["code"] != unit:
        raise FhirInputError(f"{where}.code", f"must be {unit}")
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FhirInputError(f"{where}.value", "must be a JSON number")
    return value


def _component_value(concept: _Concept, comp: Mapping[str, Any], where: str) -> tuple[Any, str]:
    """The value and the FHIRPath it came from; (None, ...) for an unanswered DLQI item."""
    expected = _VALUE_KEY[concept.kind]
    given = [k for k in comp if k.startswith("value")]
    for key in given:
        if key != expected:
            raise FhirInputError(f"{where}.{key}", f"{concept.code} is sent as {expected}")
    absent = "dataAbsentReason" in comp
    if given and absent:
        raise FhirInputError(f"{where}.dataAbsentReason", "must be absent when a value is given")
    if not given:
        if absent and concept.path[:1] in {("dlqi",), ()}:  # a DLQI item, or derived
            return None, f"{where}.dataAbsentReason"
        if absent:
            raise FhirInputError(f"{where}.dataAbsentReason", "only a DLQI item may be unanswered")
        raise FhirInputError(where, f"needs {expected}")
    value = comp[expected]
    if concept.kind == "integer":
        if not _is_int(value):
            raise FhirInputError(f"{where}.{expected}", "must be a JSON integer")
        return value, f"{where}.{expected}"
    if concept.kind == "boolean":
        if not isinstance(value, bool):
            raise FhirInputError(f"{where}.{expected}", "must be true or false")
        return value, f"{where}.{expected}"
    unit = "%" if concept.kind == "percent" else "{score}"
    return _quantity_number(value, f"{where}.{expected}", unit), f"{where}.{expected}.value"


def _read_components(resource: Mapping[str, Any]) -> dict[str, tuple[Any, str, int]]:
    """Component values by code, with their FHIRPath and index; duplicates are refused."""
    values: dict[str, tuple[Any, str, int]] = {}
    for i, raw in enumerate(_array(resource.get("component"), "Observation.component")):
        where = f"Observation.component[{i}]"
        comp = _object(raw, where)
        concept = _component_concept(comp, where)
        if concept.code in values:
            first = values[concept.code][2]
            raise FhirInputError(
                f"{where}.code", f"repeats {concept.code} of Observation.component[{first}]"
            )
        # value[x] keys are checked against the concept by _component_value.
        extra = {k: v for k, v in comp.items() if not k.startswith("value")}
        _only(where, extra, _COMPONENT_ELEMENTS, _LOST)
        value, source = _component_value(concept, comp, where)
        values[concept.code] = (value, source, i)
    return values


def _missing(code: str) -> FhirInputError:
    return FhirInputError("Observation.component", f"needs a component {code}")


def _region(
    region: Region, values: Mapping[str, tuple[Any, str, int]], sources: dict[str, str]
) -> dict[str, Any]:
    slug, key = _slug(region), region.value
    out: dict[str, Any] = {}
    for sign, _label in _SIGNS:
        code = f"pasi-{slug}-{sign}"
        if code not in values:
            raise _missing(code)
        out[sign], sources[f"/pasi/{key}/{sign}"] = values[code][:2]
    score = values.get(f"pasi-{slug}-area-score")
    percent = values.get(f"pasi-{slug}-area-percent")
    if percent is None and score is None:
        raise _missing(f"pasi-{slug}-area-score or pasi-{slug}-area-percent")
    out["area_percent"] = None if percent is None else percent[0]
    out["area_score"] = score[0] if percent is None and score is not None else None
    if percent is not None:
        sources[f"/pasi/{key}/area_percent"] = percent[1]
        if score is not None:
            _check_area_agrees(score, percent[0])
    elif score is not None:
        sources[f"/pasi/{key}/area_score"] = score[1]
    sources[f"/pasi/{key}"] = "Observation.component"
    return out


def _check_area_agrees(score: tuple[Any, str, int], percent: float | int) -> None:
    """The percent decides the area score; a contradicting score must not pass unnoticed.

    Only checked when the percent is in range: ranges are the request model's to report.
    """
    try:
        expected = _area_score(percent)
    except ScoringInputError:
        return
    if score[0] != expected:
        raise FhirInputError(
            score[1], f"is {score[0]} but the area percent {percent} gives area score {expected}"
        )


def parse_observation(resource: object) -> ParsedObservation:
    """Read a posted PASI Observation (the shape `assessment_observation` serves) as a v1
    assessment body, so FHIR clients get exactly the v1 rules and scores.

    Types are checked here (a JSON integer stays an int, a string is never coerced); ranges are
    left to the request model, whose JSON pointers `ParsedObservation.expression` translates.
    Accepted statuses: final, amended, corrected. Derived values (the PASI `valueQuantity`,
    `pga-x-bsa`, the `dlqi` total, an area score beside its percent) are recomputed by the
    service, not read; an area score that contradicts its percent is refused. Elements the
    service would not keep are refused, except non-modifier extensions, which FHIR lets a
    receiver ignore.
    """
    obs = _object(resource, "Observation")
    if obs.get("resourceType") != "Observation":
        raise FhirInputError("Observation.resourceType", "must be Observation")
    for key in ("modifierExtension", "implicitRules"):
        if key in obs:
            raise FhirInputError(f"Observation.{key}", "is not understood, so it is refused")
    for other in ("effectivePeriod", "effectiveInstant", "effectiveTiming"):
        if other in obs:
            raise FhirInputError(f"Observation.{other}", "use effectiveDateTime (a date)")
    _only("Observation", obs, _KNOWN_ELEMENTS, _LOST + " in a PASI Observation")
    status = obs.get("status")
    if status not in _ACCEPTED_STATUS:
        raise FhirInputError(
            "Observation.status", "must be final, amended or corrected for a new assessment"
        )
    _check_code(obs)
    patient_id = _patient_id(obs)
    sources: dict[str, str] = {"/assessed_on": "Observation.effectiveDateTime"}
    assessed_on = _assessed_on(obs)
    visit, baseline = _extensions(obs, sources)
    assessor = _assessor(obs, sources)
    notes = _notes(obs, sources)
    values = _read_components(obs)
    pasi = {region.value: _region(region, values, sources) for region in Region}
    for code in ("bsa-percent", "iga"):
        if code in values:
            sources["/" + _BY_CODE[code].path[0]] = values[code][1]
    dlqi: dict[str, Any] | None = None
    if any(code.startswith("dlqi-item-") for code in values):
        dlqi = {}
        for body_field, suffix in _DLQI_FIELDS:
            item = values.get(f"dlqi-item-{suffix}")
            dlqi[body_field] = None if item is None else item[0]
            if item is not None:
                sources[f"/dlqi/{body_field}"] = item[1]
        sources["/dlqi"] = "Observation.component"
    elif "dlqi" in values:
        raise FhirInputError(
            f"Observation.component[{values['dlqi'][2]}]",
            "the DLQI total is computed from its items: send dlqi-item-1 ... dlqi-item-10",
        )
    if "pga-x-bsa" in values and "iga" not in values:
        raise FhirInputError(
            f"Observation.component[{values['pga-x-bsa'][2]}]",
            "PGA x BSA is computed from IGA and BSA: send the iga component",
        )
    body: dict[str, Any] = {
        "assessed_on": assessed_on,
        "visit": visit,
        "assessor": assessor,
        "is_baseline": baseline,
        "notes": notes,
        "pasi": pasi,
        "iga": values["iga"][0] if "iga" in values else None,
        "bsa_percent": values["bsa-percent"][0] if "bsa-percent" in values else None,
        "dlqi": dlqi,
    }
    return ParsedObservation(patient_id=patient_id, body=body, sources=sources)


def observation_to_assessment(resource: object) -> tuple[str, dict[str, Any]]:
    """(patient id, v1 assessment body) of a posted PASI Observation; see `parse_observation`."""
    parsed = parse_observation(resource)
    return parsed.patient_id, parsed.body


# ---------------------------------------------------------------------------------------------
# Patient, Bundle, OperationOutcome, CapabilityStatement

_GENDER: Final[Mapping[str, str]] = {
    "female": "female",
    "male": "male",
    "other": "other",
    "unknown": "unknown",
}


def patient_resource(
    patient_id: str,
    identifiers: Sequence[Mapping[str, str]],
    sex: str | None,
    birth_year: int | None,
    organization_id: str | None = None,
    *,
    last_updated: datetime | None = None,
) -> dict[str, Any]:
    """A Patient with only what the service keeps: identifiers, gender, birth year, custodian.

    `sex` (female, male, other, unknown) maps one-to-one to FHIR administrative-gender; a
    patient with none recorded has no `gender` (absent is not the same as "unknown").
    """
    out: dict[str, Any] = {"resourceType": "Patient", "id": patient_id}
    if last_updated is not None:
        out["meta"] = {"lastUpdated": _instant(last_updated)}
    out["identifier"] = [{"system": i["system"], "value": i["value"]} for i in identifiers]
    if sex is not None:
        if sex not in _GENDER:
            raise ValueError(f"sex {sex!r} has no administrative-gender")
        out["gender"] = _GENDER[sex]
    if birth_year is not None:
        out["birthDate"] = f"{birth_year:04d}"
    if organization_id is not None:
        out["managingOrganization"] = {"reference": f"Organization/{organization_id}"}
    return out


def _full_url(base_url: str, resource: Mapping[str, Any]) -> str:
    return f"{base_url.rstrip('/')}/{resource['resourceType']}/{resource['id']}"


def _links(self_url: str, next_url: str | None) -> list[dict[str, str]]:
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    return links


def bundle_searchset(
    entries: list[dict[str, Any]],
    total: int,
    self_url: str,
    next_url: str | None,
    base_url: str,
) -> dict[str, Any]:
    """A searchset Bundle: `total` counts every match, `entries` are this page's resources."""
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": _links(self_url, next_url),
    }
    if entries:
        out["entry"] = [
            {"fullUrl": _full_url(base_url, r), "resource": r, "search": {"mode": "match"}}
            for r in entries
        ]
    return out


def bundle_history(
    versions: list[dict[str, Any]],
    self_url: str,
    base_url: str,
    next_url: str | None = None,
) -> dict[str, Any]:
    """A history Bundle of one resource's versions (newest first, as FHIR orders history).

    Version 1 was a create (POST); every later version, including the entered-in-error
    marking, an update (PUT), since the resource stays readable.
    """
    entries = []
    for resource in versions:
        version = resource["meta"]["versionId"]
        created = version == "1"
        entries.append(
            {
                "fullUrl": _full_url(base_url, resource),
                "resource": resource,
                "request": {
                    "method": "POST" if created else "PUT",
                    "url": resource["resourceType"]
                    if created
                    else f"{resource['resourceType']}/{resource['id']}",
                },
                "response": {
                    "status": "201 Created" if created else "200 OK",
                    "etag": f'W/"{version}"',
                    "lastModified": resource["meta"]["lastUpdated"],
                },
            }
        )
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history",
        "total": len(versions),
        "link": _links(self_url, next_url),
    }
    if entries:
        out["entry"] = entries
    return out


# http://hl7.org/fhir/R4/valueset-issue-type.html
ISSUE_TYPES: Final = frozenset(
    {
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
)
# The issue type a status answers with when the caller names none.
ISSUE_TYPE_FOR_STATUS: Final[Mapping[int, str]] = {
    400: "structure",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "invalid",
    428: "required",
    429: "throttled",
    500: "exception",
    503: "transient",
    504: "timeout",
}


@dataclass(frozen=True, slots=True)
class OutcomeIssue:
    """One problem of an OperationOutcome: issue type, message and FHIRPath expressions."""

    diagnostics: str
    expression: Sequence[str] | None = None
    code: str | None = None


def operation_outcome_issues(status_code: int, issues: Sequence[OutcomeIssue]) -> dict[str, Any]:
    """An OperationOutcome with one issue per problem (e.g. one per invalid field)."""
    if not 400 <= status_code <= 599:
        raise ValueError("an OperationOutcome for errors needs a 4xx or 5xx status")
    if not issues:
        raise ValueError("an OperationOutcome needs at least one issue")
    default = ISSUE_TYPE_FOR_STATUS.get(
        status_code, "processing" if status_code < 500 else "exception"
    )
    out = []
    for issue in issues:
        code = issue.code or default
        if code not in ISSUE_TYPES:
            raise ValueError(f"{code!r} is not in the FHIR issue-type value set")
        entry: dict[str, Any] = {"severity": "error", "code": code}
        if issue.diagnostics:
            entry["diagnostics"] = issue.diagnostics
        if issue.expression:
            entry["expression"] = list(issue.expression)
        out.append(entry)
    return {"resourceType": "OperationOutcome", "issue": out}


def operation_outcome(
    status_code: int,
    diagnostics: str,
    expression: list[str] | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """The OperationOutcome for a `/fhir` error; `code` defaults from the HTTP status."""
    return operation_outcome_issues(status_code, [OutcomeIssue(diagnostics, expression, code)])


def _search_param(name: str, kind: str, definition: str | None, doc: str) -> dict[str, str]:
    out = {"name": name, "type": kind, "documentation": doc}
    if definition is not None:
        out["definition"] = f"http://hl7.org/fhir/SearchParameter/{definition}"
    return out


def capability_statement(base_url: str, software_version: str | None = None) -> dict[str, Any]:
    """What `/fhir` offers, so FHIR clients can discover it (`GET /fhir/metadata`)."""
    software: dict[str, str] = {"name": "psoriasis-scoring"}
    if software_version is not None:
        software["version"] = software_version
    observation_doc = (
        "PASI Observations, one per assessment version: code "
        f"{CODE_SYSTEM_URL}#{PASI_CODE}, a component per region sign and area (codes in "
        f"CodeSystem/{CODE_SYSTEM_ID}), BSA %, IGA and DLQI items as components. Create "
        "takes the same shape and recomputes every score."
    )
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": DEFINITIONS_DATE,
        "publisher": "psoriasis-scoring",
        "kind": "instance",
        "software": software,
        "implementation": {
            "description": "Psoriasis severity scoring service, FHIR R4 facade",
            "url": base_url,
        },
        "fhirVersion": FHIR_VERSION,
        "format": ["json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": False,
                    "description": (
                        "Bearer API keys: send `Authorization: Bearer <key>`. Each key sees "
                        "only its organizations' patients; any other id answers 404. SMART on "
                        "FHIR authorization is out of scope and not supported."
                    ),
                },
                "resource": [
                    {
                        "type": "Patient",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": [
                            _search_param(
                                "identifier",
                                "token",
                                "Patient-identifier",
                                "system|value of an external identifier",
                            )
                        ],
                    },
                    {
                        "type": "Observation",
                        "documentation": observation_doc,
                        "interaction": [
                            {"code": "read"},
                            {"code": "vread"},
                            {"code": "history-instance"},
                            {"code": "search-type"},
                            {"code": "create"},
                        ],
                        "versioning": "versioned",
                        "readHistory": True,
                        "updateCreate": False,
                        "searchParam": [
                            _search_param("patient", "reference", "clinical-patient", "Patient id"),
                            _search_param(
                                "subject", "reference", "Observation-subject", "Patient/{id}"
                            ),
                            _search_param(
                                "code", "token", "clinical-code", f"{CODE_SYSTEM_URL}|{PASI_CODE}"
                            ),
                            _search_param(
                                "date", "date", "clinical-date", "effective date, ge/le prefixes"
                            ),
                            _search_param("_count", "number", None, "page size"),
                        ],
                    },
                    {
                        "type": "CodeSystem",
                        "interaction": [{"code": "read"}],
                        "documentation": f"CodeSystem/{CODE_SYSTEM_ID}: the service's own codes",
                    },
                ],
            }
        ],
    }
