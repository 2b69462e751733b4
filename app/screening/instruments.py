"""The screening instruments carecoord understands, by LOINC code.

Codes (LOINC, http://loinc.org): PHQ-9 panel 44249-1, total 44261-6, items 44250-9 ... 44260-8 (item 9,
"thoughts that you would be better off dead, or of hurting yourself"); PHQ-2 panel 55757-9, total
55758-7 (its items are PHQ-9 items 1 and 2); GAD-7 panel 69737-5, total 70274-6; AUDIT-C panel
72109-2, total 75626-2. PHQ and GAD items share the LOINC answer list LL358-3, scored 0..3.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

LOINC = "http://loinc.org"


class InstrumentId(StrEnum):
    PHQ9 = "PHQ-9"
    PHQ2 = "PHQ-2"
    GAD7 = "GAD-7"
    AUDITC = "AUDIT-C"
    PHQ9_ITEM9 = "PHQ-9 item 9"  # an item 9 result sent on its own (Observation 44260-8)


@dataclass(frozen=True, slots=True)
class Instrument:
    id: InstrumentId
    panel_code: str
    total_code: str
    item_codes: tuple[str, ...] = ()  # in form order; empty: totals are never computed from items
    max_score: int = 0


PHQ9_ITEM9 = "44260-8"

INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument(
        InstrumentId.PHQ9,
        "44249-1",
        "44261-6",
        ("44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", PHQ9_ITEM9),
        27,
    ),
    Instrument(InstrumentId.PHQ2, "55757-9", "55758-7", ("44250-9", "44255-8"), 6),
    Instrument(
        InstrumentId.GAD7,
        "69737-5",
        "70274-6",
        ("69725-0", "68509-9", "69733-4", "69734-2", "69735-9", "69689-8", "69736-7"),
        21,
    ),
    Instrument(InstrumentId.AUDITC, "72109-2", "75626-2", (), 12),
)
BY_TOTAL_CODE = {i.total_code: i for i in INSTRUMENTS}
BY_PANEL_CODE = {i.panel_code: i for i in INSTRUMENTS}
BY_ID = {i.id: i for i in INSTRUMENTS}
# Observation codes that carry a screening result: every instrument total, and PHQ-9 item 9 alone.
SCREENING_OBSERVATION_CODES = frozenset({*BY_TOTAL_CODE, PHQ9_ITEM9})

# LOINC answer list LL358-3 ("Not at all" ... "Nearly every day"), used by PHQ-2, PHQ-9 and GAD-7 items.
LOINC_ANSWER_SCORES = {"LA6568-5": 0, "LA6569-3": 1, "LA6570-1": 2, "LA6571-9": 3}
