"""High utilisation (seed 003 risk stratification): frequent ED use or a recent 30-day readmission,
judged from the patient's visits as of an instant. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from itertools import pairwise

from app.rules.config import UtilizationSpec
from app.rules.facts import EncounterSummary

ED_CLASS = "EMER"
STAY_CLASSES = frozenset({"IMP", "OBSENC"})


def high_utilization(visits: Iterable[EncounterSummary], at: datetime, spec: UtilizationSpec) -> str | None:
    """Why the patient is high-utilising as of `at` (a reason for the task's history), or None."""
    visits = [v for v in visits if v.started_at is not None and v.started_at <= at]
    ed_since = at - timedelta(days=spec.ed_window_days)
    ed = [v for v in visits if v.class_code == ED_CLASS and v.started_at is not None and v.started_at >= ed_since]
    if len(ed) >= spec.ed_visits:
        return f"{len(ed)} ED visits in {spec.ed_window_days} days"
    stays = sorted(
        (v for v in visits if v.class_code in STAY_CLASSES and v.started_at is not None),
        key=lambda v: v.started_at or at,
    )
    since = at - timedelta(days=spec.readmission_window_days)
    for earlier, later in pairwise(stays):
        if earlier.ended_at is None or later.started_at is None or later.started_at < since:
            continue
        gap = later.started_at - earlier.ended_at
        if timedelta(0) <= gap <= timedelta(days=spec.readmission_days):
            return f"readmitted within {spec.readmission_days} days (in the last {spec.readmission_window_days} days)"
    return None
