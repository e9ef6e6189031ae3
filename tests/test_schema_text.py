"""Every text field of a request body refuses U+0000 (PostgreSQL text cannot hold it), through
`app.schemas.common.NO_NUL` on the field itself: a `str` without it would reach the database
and fail there on PostgreSQL only."""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal, get_args, get_origin

import pytest
from pydantic import ValidationError

import app.main  # noqa: F401  # every route's models defined
from app.schemas.common import NO_NUL, StrictInput

TEXT = Annotated[str, NO_NUL]


def _models() -> list[type[StrictInput]]:
    found: list[type[StrictInput]] = []
    todo = list(StrictInput.__subclasses__())
    while todo:
        model = todo.pop()
        if model not in found:
            found.append(model)
            todo.extend(model.__subclasses__())
    return sorted(found, key=lambda m: f"{m.__module__}.{m.__qualname__}")


def _unchecked_text(annotation: Any, checked: bool) -> bool:
    """Whether `annotation` holds a `str` outside an `Annotated` carrying NO_NUL (dict keys
    aside: the raw dicts of a batch item are validated again, as models, field by field)."""
    if annotation is str:
        return not checked
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = get_args(annotation)
        return _unchecked_text(inner, checked or any(m is NO_NUL for m in metadata))
    if origin is Literal:
        return False
    args = get_args(annotation)
    if origin is dict:
        args = args[1:]
    return any(_unchecked_text(arg, checked) for arg in args)  # unions, lists, dict values


MODELS = _models()


def test_the_walk_finds_the_request_models() -> None:
    names = {model.__name__ for model in MODELS}
    assert {"AssessmentIn", "PatientIn", "Identifier", "TreatmentIn", "ApiKeyIn"} <= names


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_text_field_refuses_nul(model: type[StrictInput]) -> None:
    unchecked = [
        name
        for name, info in model.model_fields.items()
        if _unchecked_text(info.annotation, any(m is NO_NUL for m in info.metadata))
    ]
    assert unchecked == [], f"{model.__name__}: text fields without NO_NUL: {unchecked}"


def test_the_walk_sees_a_text_field_without_the_check() -> None:
    assert _unchecked_text(str | None, False)
    assert _unchecked_text(list[Annotated[str, "other"]], False)
    assert _unchecked_text(dict[str, str], False)
    assert not _unchecked_text(TEXT | None, False)
    assert not _unchecked_text(dict[str, int], False)
    assert not _unchecked_text(Literal["a", "b"], False)
    assert not _unchecked_text(typing.Optional[list[TEXT]], False)  # noqa: UP045


def test_a_nul_in_a_text_field_is_refused_naming_the_field() -> None:
    from app.schemas.records import AssessmentIn

    body = {"assessed_on": "2020-01-01", "visit": "Week\x0012", "pasi": _pasi()}
    with pytest.raises(ValidationError) as raised:
        AssessmentIn.model_validate(body)
    [error] = raised.value.errors()
    assert error["loc"] == ("visit",)
    assert "must not contain the NUL character (U+0000)" in error["msg"]


def _pasi() -> dict[str, Any]:
    signs = {"erythema": 1, "induration": 1, "desquamation": 1, "area_score": 1}
    return dict.fromkeys(("head_neck", "upper_limbs", "trunk", "lower_limbs"), signs)
