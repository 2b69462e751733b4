"""Reconciliation policy: what counts as which kind of change, when a file is refused, effective dates.

The set-based statements that apply it live in app/state/rosters.py; this module holds the decisions,
so they are stated (and tested) once, apart from SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from app.roster.records import MemberRecord


class ChangeKind(StrEnum):
    ADD = "add"  # new to this sender's roster, or back after a termination
    TERM = "term"  # left the roster (absent from the file, or ended by its enrollment_end)
    CHANGE = "change"  # still enrolled, something about them changed


class MemberStatus(StrEnum):
    ACTIVE = "active"
    TERMINATED = "terminated"


# Fields compared between the file and current membership, grouped by what the change means.
CHANGE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "reassignment": ("pcp_npi", "practice"),
    "program": ("program", "bh_program", "risk_tier"),
    "demographics": ("family", "given", "birth_date", "sex", "phone", "address"),
    "identity": ("identifier_system", "identifier_value", "medicaid_id"),
    "enrollment": ("enrollment_start", "enrollment_end"),
}
COMPARED_FIELDS = tuple(f for fields in CHANGE_CATEGORIES.values() for f in fields)


def categories(fields: list[str]) -> list[str]:
    """The change categories a list of changed fields falls in, in a stable order."""
    return [name for name, members in CHANGE_CATEGORIES.items() if set(members) & set(fields)]


def member_status(record: MemberRecord, as_of: date) -> MemberStatus:
    return MemberStatus.TERMINATED if record.terminated_by(as_of) else MemberStatus.ACTIVE


def absent_member_end(as_of: date) -> date:
    """A member missing from a full roster was enrolled through the day before the roster's date."""
    return as_of - timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    reason: str | None = None


def judge_file(total_rows: int, error_rows: int, max_error_ratio: float) -> Verdict:
    """Bad rows are reported and skipped; past the ratio the file is refused whole (nothing applied),
    and a file without one good row is refused, so an empty file never terminates the roster."""
    good = total_rows - error_rows
    if good <= 0:
        return Verdict(False, "no valid member rows" if total_rows else "no member rows")
    ratio = error_rows / total_rows
    if ratio > max_error_ratio:
        return Verdict(False, f"{error_rows} of {total_rows} rows are bad ({ratio:.1%} > {max_error_ratio:.1%})")
    return Verdict(True)


def judge_terminations(active_before: int, terminated: int, max_ratio: float, min_terminations: int) -> Verdict:
    """A full snapshot that would end more than `max_ratio` of the sender's active members (and at
    least `min_terminations` of them) is not applied but held for data staff: a one-row file sent as a
    full roster must not terminate everyone and cancel their tasks."""
    if active_before <= 0 or terminated < min_terminations:
        return Verdict(True)
    ratio = terminated / active_before
    if ratio > max_ratio:
        return Verdict(
            False,
            f"held for confirmation: would terminate {terminated} of {active_before} active members "
            f"({ratio:.1%} > {max_ratio:.1%})",
        )
    return Verdict(True)
