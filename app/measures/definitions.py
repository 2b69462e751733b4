"""What each dashboard measure counts (DESIGN.md "Quality measures"; docs/measures.md has the prose).

A definition names the task type whose tasks are the measure's cases, the instant that places a case in
a period (its anchor) and the window the work must be done in. Windows and targets come from
`Settings.measures` (CARECOORD_MEASURES__*), never from here. Task types are the rules file's
`task.type` values of the shipped rules (app/rules/default_rules.toml)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.settings import MeasureSettings

HOUR_S = 3600
DAY_S = 24 * HOUR_S

# Task types (rules file `task.type`) the measures read.
POST_DISCHARGE_CONTACT = "post-discharge-contact"
POST_ED_CONTACT = "post-ed-contact"
MEDICATION_RECONCILIATION = "medication-reconciliation"
FUH_FOLLOW_UP = "fuh-follow-up"
BH_REFERRAL = "bh-referral"
ADMISSION_NOTIFICATION = "admission-notification"

# A cancelled task is an exclusion (discharge or admission cancelled, death, disenrollment, a readmission
# superseding it); one entered in error never existed.
EXCLUDED_STATUSES = ("cancelled", "entered-in-error")


class Kind(StrEnum):
    WORK_WITHIN = "work-within"  # task completed within `window_s` of its anchor
    NOTIFIED_WITHIN = "notified-within"  # task raised (the notification reached the team) within the window
    LOOP_CLOSED = "loop-closed"  # referral loop closed, with the median days to closure
    SCREENING_REACH = "screening-reach"  # members screened / members attributed in the period
    OVERDUE = "overdue"  # open tasks past due, by role and team (a snapshot: now)


class Anchor(StrEnum):
    DISCHARGE = "discharge"  # the encounter's discharge instant
    ADMIT = "admit"  # the encounter's admission instant
    RAISED = "raised"  # the task's creation (a referral is made when the positive screen raises it)


class Part(StrEnum):
    NUMERATOR = "numerator"
    DENOMINATOR = "denominator"


@dataclass(frozen=True, slots=True)
class MeasureDefinition:
    key: str
    title: str
    description: str
    kind: Kind
    numerator_label: str
    denominator_label: str
    source: str
    task_type: str | None = None
    anchor: Anchor | None = None
    window_s: int | None = None
    target: float | None = None
    unit: str = "rate"  # "rate": numerator/denominator as a share; "tasks": counts of tasks

    @property
    def window_days(self) -> float | None:
        return None if self.window_s is None else self.window_s / DAY_S


def _work_within(
    key: str, title: str, task_type: str, window_s: int, window_text: str, source: str, targets: dict[str, float]
) -> MeasureDefinition:
    return MeasureDefinition(
        key=key,
        title=title,
        description=f"{task_type} tasks completed within {window_text} of discharge / {task_type} tasks "
        f"whose discharge falls in the period (cancelled tasks excluded; open tasks still inside the window pending)",
        kind=Kind.WORK_WITHIN,
        numerator_label=f"completed within {window_text}",
        denominator_label="discharges",
        source=source,
        task_type=task_type,
        anchor=Anchor.DISCHARGE,
        window_s=window_s,
        target=targets.get(key),
    )


def definitions(ms: MeasureSettings) -> tuple[MeasureDefinition, ...]:
    """The dashboard's measures, in display order."""
    t = ms.targets
    fuh = tuple(
        _work_within(
            f"fuh-{d}d",
            f"Follow-up after hospitalization for mental illness, {d}-day (FUH)",
            FUH_FOLLOW_UP,
            d * DAY_S,
            f"{d} days",
            f"HEDIS FUH {d}-day; DESIGN.md measures",
            t,
        )
        for d in ms.fuh_days
    )
    return (
        _work_within(
            "post-discharge-contact-7d",
            f"Contact within {ms.contact_days} days of discharge",
            POST_DISCHARGE_CONTACT,
            ms.contact_days * DAY_S,
            f"{ms.contact_days} days",
            "seed 003 BB9.Y2.1 (SIM: contact 50% within 7 days); DESIGN.md measures",
            t,
        ),
        _work_within(
            "medication-reconciliation-72h",
            f"Medication reconciliation within {ms.med_rec_hours} hours",
            MEDICATION_RECONCILIATION,
            ms.med_rec_hours * HOUR_S,
            f"{ms.med_rec_hours} hours",
            "seed 003 BB9.Y2.3b (reconciliation completed within 72 hours); DESIGN.md measures",
            t,
        ),
        _work_within(
            "post-ed-contact-7d",
            f"ED follow-up within {ms.ed_contact_days} days",
            POST_ED_CONTACT,
            ms.ed_contact_days * DAY_S,
            f"{ms.ed_contact_days} days",
            "seed 003 BB9.Y2.1 (hospitalization or ED visit); HEDIS FUM/FUA 7-day; DESIGN.md measures",
            t,
        ),
        *fuh,
        MeasureDefinition(
            key="bh-referral-loop-closure",
            title="BH referral loop closure",
            description=f"{BH_REFERRAL} tasks completed (loop closed: visit summary received) / {BH_REFERRAL} tasks "
            "raised in the period by a positive BH screen (cancelled excluded); median days from referral to closure",
            kind=Kind.LOOP_CLOSED,
            numerator_label="loops closed",
            denominator_label="referrals (positive screens)",
            source="seed 003 BB7.Y2.3 (50% connected to resources; referral tracking); DESIGN.md measures",
            task_type=BH_REFERRAL,
            anchor=Anchor.RAISED,
            target=t.get("bh-referral-loop-closure"),
        ),
        MeasureDefinition(
            key="admission-notification-timeliness",
            title=f"Admission notification within {ms.notification_hours} hours",
            description=f"{ADMISSION_NOTIFICATION} tasks raised within {ms.notification_hours} hours of the admission "
            f"/ {ADMISSION_NOTIFICATION} tasks whose admission falls in the period (cancelled admissions excluded)",
            kind=Kind.NOTIFIED_WITHIN,
            numerator_label=f"notified within {ms.notification_hours} hours",
            denominator_label="admissions",
            source="HEDIS TRC notification of inpatient admission; seed 003 BB9.Y2.3c; DESIGN.md measures",
            task_type=ADMISSION_NOTIFICATION,
            anchor=Anchor.ADMIT,
            window_s=ms.notification_hours * HOUR_S,
            target=t.get("admission-notification-timeliness"),
        ),
        MeasureDefinition(
            key="screening-reach",
            title="Behavioral-health screening reach",
            description="attributed members with a BH screening result dated in the period / members attributed "
            "(enrolled) at any time in the period",
            kind=Kind.SCREENING_REACH,
            numerator_label="members screened",
            denominator_label="members targeted",
            source="seed 003 BB7.Y1.2 (25%) and BB7.Y2.1 (50%) screening reach; DESIGN.md measures",
            target=t.get("screening-reach"),
        ),
        MeasureDefinition(
            key="overdue-tasks",
            title="Overdue tasks by role",
            description="open tasks past their due time / open tasks, now (not the period), by role and team",
            kind=Kind.OVERDUE,
            numerator_label="overdue",
            denominator_label="open tasks",
            source="DESIGN.md measures (open, due-soon and overdue tasks by role and team)",
            target=t.get("overdue-tasks"),
            unit="tasks",
        ),
    )


def by_key(defs: tuple[MeasureDefinition, ...]) -> dict[str, MeasureDefinition]:
    return {d.key: d for d in defs}
