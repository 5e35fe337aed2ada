"""Statistics and target checks for `make bench`: pure functions, unit-tested."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), linear interpolation between closest ranks."""
    if not samples:
        raise ValueError("no samples")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """Median of repeated runs and their spread (min, max, and (max-min)/median)."""

    median: float
    low: float
    high: float
    runs: int

    @property
    def spread(self) -> float:
        return (self.high - self.low) / self.median if self.median else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "runs": self.runs,
            "spread": self.spread,
        }


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("no values")
    return Summary(statistics.median(values), min(values), max(values), len(values))


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(samples_ms, 50),
        "p99": percentile(samples_ms, 99),
        "max": max(samples_ms),
        "samples": len(samples_ms),
    }


@dataclass(frozen=True)
class Target:
    """One target of the issue: value compared with a bound."""

    name: str
    value: float
    bound: float
    at_least: bool  # True: value >= bound; False: value <= bound
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.value >= self.bound if self.at_least else self.value <= self.bound

    @property
    def shortfall(self) -> float:
        """How far from the bound, as a fraction of the bound (0 when met)."""
        if self.met or not self.bound:
            return 0.0
        return abs(self.value - self.bound) / abs(self.bound)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": self.value,
            "bound": self.bound,
            "at_least": self.at_least,
            "unit": self.unit,
            "met": self.met,
            "shortfall": self.shortfall,
        }

    def describe(self) -> str:
        sign = ">=" if self.at_least else "<="
        verdict = "met" if self.met else f"NOT met, off by {self.shortfall:.0%}"
        return f"{self.value:.3g}{self.unit} (target {sign} {self.bound:g}{self.unit}): {verdict}"


def ratio(numerator: float, denominator: float) -> float:
    if denominator <= 0:
        raise ValueError(f"ratio against {denominator}")
    return numerator / denominator
