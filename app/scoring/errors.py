"""Error raised by the scoring core for input the published formulas cannot score."""

from __future__ import annotations

__all__ = ["ScoringInputError"]


class ScoringInputError(ValueError):
    """Input the formulas cannot score.

    `field` is a '/'-separated path relative to the scored object (e.g. 'trunk/area_percent',
    'item7_problem'), so an API layer can turn it into a JSON pointer by adding its own prefix;
    `rule` is a short sentence such as 'must be an integer from 0 to 4'.
    """

    field: str
    rule: str

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule

    def __reduce__(self) -> tuple[type[ScoringInputError], tuple[str, str]]:
        # Keep the two-argument constructor working through pickle/copy (multiprocessing etc.).
        return (type(self), (self.field, self.rule))
