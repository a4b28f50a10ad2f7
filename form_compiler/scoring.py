"""The Python scorer, derived from the same scoring definition as the XForm calculates.

The definition (``Instrument.scoring``) is embedded in every compiled form's report, so the
server scores a submission with the rules of the exact form version it came from:
``Scorer.from_report(report)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Scorer"]


@dataclass(frozen=True)
class Scorer:
    """Domain scores, bands and closure readiness for one instrument version."""

    #: domain id -> subdomain ids, in instrument order
    domains: dict[str, tuple[str, ...]]
    counted_values: tuple[str, ...]
    excluded_values: tuple[str, ...]
    min_counted: int
    min_counted_fraction: float
    decimals: int
    bands: tuple[dict[str, Any], ...]
    closure_threshold: float
    change: dict[str, float]
    regression_drop: float
    survivor_gap: int

    @classmethod
    def from_definition(
        cls, scoring: Mapping[str, Any], domains: Mapping[str, tuple[str, ...] | list[str]]
    ) -> Scorer:
        """Build from a scoring dict (``Scoring.as_dict()``) and the domain structure."""
        return cls(
            domains={d: tuple(subs) for d, subs in domains.items()},
            counted_values=tuple(str(v) for v in scoring["counted_values"]),
            excluded_values=tuple(str(v) for v in scoring["excluded_values"]),
            min_counted=int(scoring["min_counted"]),
            min_counted_fraction=float(scoring["min_counted_fraction"]),
            decimals=int(scoring["decimals"]),
            bands=tuple(scoring["bands"]),
            closure_threshold=float(scoring["closure"]["threshold"]),
            change=dict(scoring.get("change", {})),
            regression_drop=float(scoring.get("regression_drop", 1.0)),
            survivor_gap=int(scoring.get("survivor_gap", 2)),
        )

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> Scorer:
        """Build from a compiled form's ``report.json``."""
        domains = {d["id"]: tuple(d["subdomains"]) for d in report["domains"]}
        return cls.from_definition(report["scoring"], domains)

    def minimum_for(self, domain_id: str) -> int:
        """Counted ratings needed for ``domain_id`` to have a score."""
        n = len(self.domains[domain_id])
        return max(self.min_counted, math.ceil(self.min_counted_fraction * n))

    def counted(self, value: Any) -> int | None:
        """The rating as an int when it counts, else None (blank, not applicable, not assessed)."""
        if value is None:
            return None
        text = str(value).strip()
        return int(text) if text in self.counted_values else None

    def __post_init__(self) -> None:
        # score() runs for every submission: each domain's minimum is worked out once
        object.__setattr__(self, "_minimum", {d: self.minimum_for(d) for d in self.domains})

    def score(self, ratings: Mapping[str, Any]) -> dict[str, float | None]:
        """Unrounded mean of the counted ratings per domain; None below the minimum."""
        out: dict[str, float | None] = {}
        counted, minimum = self.counted, self._minimum
        for domain_id, subs in self.domains.items():
            values = [v for v in map(counted, map(ratings.get, subs)) if v is not None]
            out[domain_id] = (
                sum(values) / len(values) if len(values) >= minimum[domain_id] else None
            )
        return out

    def rounded(self, score: float | None) -> float | None:
        """A score rounded as the form displays it."""
        return None if score is None else round(score, self.decimals)

    def band(self, score: float) -> str:
        """The id of the highest band whose minimum ``score`` reaches."""
        chosen = self.bands[0]["id"]
        for band in sorted(self.bands, key=lambda b: b["min"]):
            if score >= band["min"]:
                chosen = band["id"]
        return chosen

    def regressed(
        self, before: Mapping[str, float | None], after: Mapping[str, float | None]
    ) -> list[str]:
        """Domains whose score dropped by ``regression_drop`` or more from ``before`` to
        ``after`` (a mean of thirds dropping by exactly 1 counts, whatever the rounding)."""
        return [
            d
            for d, now in after.items()
            if now is not None
            and before.get(d) is not None
            and before[d] - now >= self.regression_drop - 1e-9
        ]

    def closure_ready(self, domain_scores: Mapping[str, float | None]) -> bool:
        """Every domain scored and at or above the closure threshold."""
        return all(
            domain_scores.get(d) is not None and domain_scores[d] >= self.closure_threshold - 1e-9
            for d in self.domains
        )

    def change_label(self, delta: float) -> str:
        """``substantial``, ``measurable`` or ``none`` (either direction)."""
        size = abs(delta)
        if size >= self.change.get("substantial", 1.0):
            return "substantial"
        if size >= self.change.get("measurable", 0.5):
            return "measurable"
        return "none"
