"""What the service returns: a measure's numbers, and the patients behind a numerator or denominator."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any


@dataclass(frozen=True)
class MeasureResult:
    """One measure for one filter and caller. `rate` is None when the denominator is 0."""

    key: str
    title: str
    description: str
    unit: str
    numerator: int
    denominator: int
    rate: float | None
    target: float | None
    numerator_label: str
    denominator_label: str
    source: str
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def meets_target(self) -> bool | None:
        if self.rate is None or self.target is None:
            return None
        return self.rate >= self.target


@dataclass(frozen=True)
class MeasurePatient:
    """One patient in a drill-down, with the worklist's display fields and what put them in: their
    task ids and the events (encounter or screening-event ids) those cases hang on. `patient_id` is
    None only for operational tasks about no one patient (overdue-tasks)."""

    patient_id: uuid.UUID | None
    given_name: str | None
    family_name: str | None
    birth_date: date | None
    task_ids: tuple[uuid.UUID, ...] = ()
    event_ids: tuple[uuid.UUID, ...] = ()
