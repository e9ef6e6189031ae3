"""Scoring inputs and the `scores` object (shared by stateless scoring and stored assessments)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from app.schemas.common import Percent, StrictInput

Severity = Annotated[
    int,
    Field(
        strict=True,
        ge=0,
        le=4,
        description="0 none, 1 slight, 2 moderate, 3 marked, 4 very marked",
    ),
]


class PasiRegionIn(StrictInput):
    """One body region: three signs (0–4) and the area involved, as a percent or a 0–6 score."""

    erythema: Severity
    induration: Severity = Field(description="Induration/thickness, 0–4")
    desquamation: Severity = Field(description="Desquamation/scaling, 0–4")
    area_percent: Percent | None = Field(
        default=None,
        description="Percent of THIS region involved, 0–100 (up to 4 decimals). "
        "Give this or `area_score`, not both.",
    )
    area_score: Annotated[int, Field(strict=True, ge=0, le=6)] | None = Field(
        default=None,
        description="Area score 0–6 (0: 0 %, 1: <10 %, 2: 10–<30 %, 3: 30–<50 %, 4: 50–<70 %, "
        "5: 70–<90 %, 6: 90–100 %). Give this or `area_percent`, not both.",
    )

    @model_validator(mode="after")
    def _one_area_form(self) -> PasiRegionIn:
        if self.area_percent is not None and self.area_score is not None:
            raise ValueError("give either area_percent or area_score, not both")
        if self.area_percent is None and self.area_score is None:
            raise ValueError("one of area_percent or area_score is required")
        return self


class PasiIn(StrictInput):
    """The four PASI regions (all required; weights 0.1, 0.2, 0.3, 0.4)."""

    head_neck: PasiRegionIn = Field(description="Head and neck (weight 0.1)")
    upper_limbs: PasiRegionIn = Field(description="Upper limbs (weight 0.2)")
    trunk: PasiRegionIn = Field(description="Trunk incl. axillae and genitalia (weight 0.3)")
    lower_limbs: PasiRegionIn = Field(description="Lower limbs incl. buttocks (weight 0.4)")


DlqiItem = Annotated[int, Field(strict=True, ge=0, le=3)]


class DlqiIn(StrictInput):
    """DLQI answers as numbers (very much 3, a lot 2, a little 1, not at all 0, not relevant 0).

    Omit or send null for an unanswered item: one unanswered item scores 0, two or more give no
    total (Cardiff rule). Item 7 has two parts. The questionnaire text is © Cardiff University and
    is not reproduced here.
    """

    item1: DlqiItem | None = Field(default=None, description="Item 1: 0–3; null = unanswered")
    item2: DlqiItem | None = Field(default=None, description="Item 2: 0–3; null = unanswered")
    item3: DlqiItem | None = Field(default=None, description="Item 3: 0–3; null = unanswered")
    item4: DlqiItem | None = Field(default=None, description="Item 4: 0–3; null = unanswered")
    item5: DlqiItem | None = Field(default=None, description="Item 5: 0–3; null = unanswered")
    item6: DlqiItem | None = Field(default=None, description="Item 6: 0–3; null = unanswered")
    item7_prevented: Annotated[bool, Field(strict=True)] | None = Field(
        default=None, description='Item 7, first part: true for "yes" (scores 3), false for "no".'
    )
    item7_problem: Annotated[int, Field(strict=True, ge=0, le=2)] | None = Field(
        default=None,
        description='Item 7, second part, only after "no": a lot 2, a little 1, not at all 0.',
    )
    item8: DlqiItem | None = Field(default=None, description="Item 8: 0–3; null = unanswered")
    item9: DlqiItem | None = Field(default=None, description="Item 9: 0–3; null = unanswered")
    item10: DlqiItem | None = Field(default=None, description="Item 10: 0–3; null = unanswered")

    @model_validator(mode="after")
    def _item7_consistent(self) -> DlqiIn:
        if self.item7_prevented is True and self.item7_problem is not None:
            raise ValueError("item7_problem must be absent when item7_prevented is true")
        if self.item7_prevented is None and self.item7_problem is not None:
            raise ValueError("item7_prevented is required when item7_problem is given")
        return self


class ClinicalScoresIn(StrictInput):
    """The scoreable part of an assessment."""

    pasi: PasiIn
    iga: Annotated[int, Field(strict=True, ge=0, le=4)] | None = Field(
        default=None,
        description="IGA/sPGA 0–4 (0 clear, 1 almost clear, 2 mild, 3 moderate, 4 severe)",
    )
    bsa_percent: Percent | None = Field(
        default=None,
        description="Measured body surface area involved, % (one patient's hand ≈ 1 %). "
        "Takes precedence over the BSA derived from regional percentages.",
    )
    dlqi: DlqiIn | None = None


PASI_EXAMPLE: dict[str, Any] = {
    "head_neck": {"erythema": 2, "induration": 2, "desquamation": 3, "area_percent": 20},
    "upper_limbs": {"erythema": 3, "induration": 2, "desquamation": 3, "area_percent": 35},
    "trunk": {"erythema": 3, "induration": 3, "desquamation": 3, "area_percent": 40},
    "lower_limbs": {"erythema": 3, "induration": 3, "desquamation": 3, "area_score": 4},
}


class PasiScoreRequest(ClinicalScoresIn):
    """PASI inputs (and optionally IGA, a measured BSA and DLQI answers) to score."""


class RegionPart(BaseModel):
    weight: float = Field(description="Region weight (0.1–0.4)")
    severity_sum: int = Field(description="Erythema + induration + desquamation, 0–12")
    area_score: int = Field(description="Area score, 0–6")
    contribution: float = Field(description="weight × severity_sum × area_score")


class Scores(BaseModel):
    pasi: float = Field(description="PASI, 0–72, a whole number of tenths")
    pasi_regions: dict[str, float] = Field(
        description="Each region's weighted contribution; they sum to `pasi`."
    )
    pasi_region_details: dict[str, RegionPart]
    bsa_percent: float | None = Field(
        description="BSA % to two decimals: measured if given, else from all four regional "
        "percentages, else null."
    )
    bsa_source: Literal["measured", "regions"] | None
    bsa_severity: Literal["mild", "moderate", "severe"] | None = Field(
        description="On the exact BSA (NPF convention): <3 % mild, 3–10 % moderate, >10 % severe."
    )
    iga: int | None
    pga_x_bsa: float | None = Field(description="IGA × BSA, 0–400 (IGA 0–4 scale)")
    pga_scale: Literal["iga_0_4"] | None
    dlqi: int | None = Field(description="DLQI total 0–30, null when absent or ≥2 items unanswered")
    dlqi_band: Literal["no_effect", "small", "moderate", "very_large", "extremely_large"] | None = (
        Field(description="Hongbo et al. 2005 bands")
    )
    severe_by_rule_of_tens: bool | None = Field(
        description="BSA > 10 or PASI > 10 or DLQI > 10; null when it cannot be decided."
    )


class BsaScoreRequest(StrictInput):
    """Either the four regional percentages, or a measured BSA (which takes precedence)."""

    area_percent: (
        dict[Literal["head_neck", "upper_limbs", "trunk", "lower_limbs"], Percent] | None
    ) = Field(default=None, description="Percent of each region involved (all four needed), 0–100")
    bsa_percent: Percent | None = Field(default=None, description="Measured BSA %, 0–100")
    iga: Annotated[int, Field(strict=True, ge=0, le=4)] | None = Field(
        default=None, description="IGA 0–4, to compute PGA × BSA"
    )

    @model_validator(mode="after")
    def _something_to_score(self) -> BsaScoreRequest:
        if self.bsa_percent is None:
            if self.area_percent is None:
                raise ValueError("give area_percent for all four regions, or bsa_percent")
            missing = {"head_neck", "upper_limbs", "trunk", "lower_limbs"} - set(self.area_percent)
            if missing:
                raise ValueError(
                    "area_percent needs all four regions; missing: " + ", ".join(sorted(missing))
                )
        return self


class BsaScoreResponse(BaseModel):
    bsa_percent: float = Field(description="BSA %, two decimals")
    source: Literal["measured", "regions"]
    severity: Literal["mild", "moderate", "severe"]
    region_contributions: dict[str, float] | None = Field(
        description="share × regional percent, per region (null when measured)"
    )
    iga: int | None
    pga_x_bsa: float | None
    pga_scale: Literal["iga_0_4"] | None


class DlqiScoreRequest(StrictInput):
    dlqi: DlqiIn


class DlqiScoreResponse(BaseModel):
    dlqi: int | None = Field(description="Total 0–30; null when two or more items are unanswered")
    band: Literal["no_effect", "small", "moderate", "very_large", "extremely_large"] | None
    item_scores: list[int | None] = Field(
        description="Items 1–10 (item 7 combined); null = unanswered"
    )
    unanswered: int
    note: str | None
