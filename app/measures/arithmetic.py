"""Rates and medians, kept apart from SQL so their edge cases (empty denominators, even counts) are
unit-tested once."""

from __future__ import annotations

from collections.abc import Iterable

SECONDS_PER_DAY = 86_400


def rate(numerator: int, denominator: int) -> float | None:
    """numerator / denominator; None (not 0) when nothing is measured: "no discharges" is not "0 %"."""
    if numerator < 0 or denominator < 0 or numerator > denominator:
        raise ValueError(f"invalid rate {numerator}/{denominator}")
    return None if denominator == 0 else numerator / denominator


def median(values: Iterable[float]) -> float | None:
    """The middle value (mean of the two middle ones for an even count); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def days(seconds: float) -> float:
    return seconds / SECONDS_PER_DAY


def meets(rate_value: float | None, target: float | None) -> bool | None:
    """Whether a rate reaches its target; None when either is unknown."""
    if rate_value is None or target is None:
        return None
    return rate_value >= target
