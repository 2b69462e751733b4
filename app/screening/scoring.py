"""Screening scores from FHIR resources (pure: no I/O).

- `QuestionnaireDefinition.of(questionnaire)`: what the registry keeps of a Questionnaire: which
  instrument it is, which LOINC code each linkId asks, and the score of each answer option.
- `score_response(definition, response)`: the instrument total of a QuestionnaireResponse (the total
  item when answered, else the sum of the item scores) and PHQ-9 item 9.
- `judge(thresholds, instrument, score, sex)`: positive or negative, and the threshold used.

An answer's score, first found wins: an ordinalValue / itemWeight extension on the answer's Coding;
the same extension on the matching answerOption of the Questionnaire; the LOINC answer code
(LA6568-5 = 0, LA6569-3 = 1, LA6570-1 = 2, LA6571-9 = 3); a valueInteger / valueDecimal answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from app.rules.config import ScreeningThresholds
from app.screening.instruments import (
    BY_ID,
    BY_PANEL_CODE,
    BY_TOTAL_CODE,
    INSTRUMENTS,
    LOINC,
    LOINC_ANSWER_SCORES,
    PHQ9_ITEM9,
    Instrument,
    InstrumentId,
)

# R4 core extension, its pre-R4 name, and the R5 successor senders already use.
SCORE_EXTENSIONS = (
    "http://hl7.org/fhir/StructureDefinition/ordinalValue",
    "http://hl7.org/fhir/StructureDefinition/questionnaire-ordinalValue",
    "http://hl7.org/fhir/StructureDefinition/itemWeight",
)
_LOINC_CODE = re.compile(r"^\d{1,7}-\d$")


class ScoringError(ValueError):
    def __init__(self, reason: str, field: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class QuestionnaireDefinition:
    url: str
    version: str
    instrument: InstrumentId
    item_codes: dict[str, str]  # linkId -> LOINC question code
    option_scores: dict[str, dict[str, int]] = field(default_factory=dict)  # linkId -> "system|code" -> score

    @classmethod
    def of(cls, questionnaire: Any, path: str = "Questionnaire") -> QuestionnaireDefinition:
        if not questionnaire.url:
            raise ScoringError("Questionnaire.url is required: responses name it as their questionnaire", f"{path}.url")
        item_codes: dict[str, str] = {}
        option_scores: dict[str, dict[str, int]] = {}
        for item, item_path in _walk(questionnaire.item or [], f"{path}.item"):
            code = _loinc_code(item.code or []) or _linkid_code(item.linkId)
            if code:
                item_codes[item.linkId] = code
            scores: dict[str, int] = {}
            for i, option in enumerate(item.answerOption or []):
                coding = option.valueCoding
                if coding is None or not coding.code:
                    continue
                option_path = f"{item_path}.answerOption[{i}]"
                weight = _extension_score(option, option_path)
                if weight is None:
                    weight = _extension_score(coding, f"{option_path}.valueCoding")
                if weight is not None:
                    scores[_coding_key(coding.system, coding.code)] = weight
            if scores:
                option_scores[item.linkId] = scores
        instrument = _instrument(_loinc_code(questionnaire.code or []), set(item_codes.values()))
        if instrument is None:
            raise ScoringError(
                "not a supported screening instrument: Questionnaire.code (or its item codes) must be the LOINC "
                f"panel of {', '.join(i.id.value for i in INSTRUMENTS)}",
                f"{path}.code",
            )
        return cls(questionnaire.url, questionnaire.version or "", instrument.id, item_codes, option_scores)

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "version": self.version,
            "instrument": self.instrument.value,
            "item_codes": self.item_codes,
            "option_scores": self.option_scores,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QuestionnaireDefinition:
        return cls(
            data["url"], data["version"], InstrumentId(data["instrument"]), data["item_codes"], data["option_scores"]
        )


@dataclass(frozen=True, slots=True)
class Score:
    instrument: InstrumentId
    score: int
    item9: int | None  # PHQ-9 item 9 (44260-8) when answered
    computed: bool  # True when summed from items (no total was given)


def score_response(definition: QuestionnaireDefinition, response: Any, path: str) -> Score:
    instrument = BY_ID[definition.instrument]
    by_code: dict[str, tuple[Any, str]] = {}
    for item, item_path in _walk(response.item or [], f"{path}.item"):
        code = definition.item_codes.get(item.linkId) or _linkid_code(item.linkId)
        if code and item.answer:
            by_code.setdefault(code, (item, item_path))
    item9 = _item_score(definition, *by_code[PHQ9_ITEM9]) if PHQ9_ITEM9 in by_code else None
    if instrument.total_code in by_code:
        total = _item_score(definition, *by_code[instrument.total_code])
        return Score(instrument.id, _in_range(instrument, total, by_code[instrument.total_code][1]), item9, False)
    if not instrument.item_codes:
        raise ScoringError(f"{instrument.id} responses must carry the total ({instrument.total_code})", f"{path}.item")
    missing = [c for c in instrument.item_codes if c not in by_code]
    if missing:
        raise ScoringError(
            f"cannot score {instrument.id}: no total ({instrument.total_code}) and items unanswered: "
            + ", ".join(missing),
            f"{path}.item",
        )
    total = sum(_item_score(definition, *by_code[c]) for c in instrument.item_codes)
    return Score(instrument.id, _in_range(instrument, total, f"{path}.item"), item9, True)


@dataclass(frozen=True, slots=True)
class ScreeningResult:
    """What a screening event records (app/db/models.py ScreeningEvent)."""

    instrument: InstrumentId
    score: int
    item9: int | None
    positive: bool
    threshold: int
    computed: bool


def result_of(thresholds: ScreeningThresholds, score: Score, sex: str | None) -> ScreeningResult:
    positive, threshold = judge(thresholds, score.instrument, score.score, sex)
    return ScreeningResult(score.instrument, score.score, score.item9, positive, threshold, score.computed)


def observation_score(code: str, value: int, item9: int | None = None) -> Score:
    """A screening Observation's value: an instrument total (with PHQ-9 item 9 when it came as a
    component), or PHQ-9 item 9 on its own."""
    if code == PHQ9_ITEM9:
        return Score(InstrumentId.PHQ9_ITEM9, value, value, False)
    return Score(BY_TOTAL_CODE[code].id, value, item9, False)


def judge(thresholds: ScreeningThresholds, instrument: InstrumentId, score: int, sex: str | None) -> tuple[bool, int]:
    """(positive, threshold): positive when the score is at or above the instrument's threshold."""
    if instrument is InstrumentId.AUDITC:
        threshold = {"M": thresholds.auditc_male, "F": thresholds.auditc_female}.get(
            sex or "", thresholds.auditc_unknown_sex
        )
    else:
        threshold = {
            InstrumentId.PHQ9: thresholds.phq9,
            InstrumentId.PHQ2: thresholds.phq2,
            InstrumentId.GAD7: thresholds.gad7,
            InstrumentId.PHQ9_ITEM9: thresholds.phq9_item9,
        }[instrument]
    return score >= threshold, threshold


def whole_score(value: Any, path: str) -> int:
    """Screening scores are whole numbers; 10.0 is 10, 10.5 is an error."""
    number = Decimal(str(value))
    if number != number.to_integral_value():
        raise ScoringError(f"a score must be a whole number, got {value}", path)
    return int(number)


def _item_score(definition: QuestionnaireDefinition, item: Any, path: str) -> int:
    answer = item.answer[0]
    apath = f"{path}.answer[0]"
    if answer.valueCoding is not None:
        coding = answer.valueCoding
        score = _extension_score(coding, f"{apath}.valueCoding")
        if score is None:
            score = definition.option_scores.get(item.linkId, {}).get(_coding_key(coding.system, coding.code))
        if score is None:
            score = definition.option_scores.get(item.linkId, {}).get(_coding_key(None, coding.code))
        if score is None and coding.system in (LOINC, None):
            score = LOINC_ANSWER_SCORES.get(coding.code or "")
        if score is None:
            raise ScoringError(f"answer {coding.system or ''}|{coding.code} has no known score", f"{apath}.valueCoding")
        return score
    for name in ("valueInteger", "valueDecimal"):
        value = getattr(answer, name)
        if value is not None:
            return whole_score(value, f"{apath}.{name}")
    if answer.valueQuantity is not None and answer.valueQuantity.value is not None:
        return whole_score(answer.valueQuantity.value, f"{apath}.valueQuantity.value")
    raise ScoringError("the answer must be a coded option or a number", apath)


def _extension_score(element: Any, path: str) -> int | None:
    for ext in element.extension or []:
        if ext.url in SCORE_EXTENSIONS:
            value = ext.valueDecimal if ext.valueDecimal is not None else ext.valueInteger
            if value is not None:
                return whole_score(value, f"{path}.extension")
    return None


def _in_range(instrument: Instrument, score: int, path: str) -> int:
    if not 0 <= score <= instrument.max_score:
        raise ScoringError(f"{instrument.id} score {score} is outside 0..{instrument.max_score}", path)
    return score


def _instrument(panel: str | None, codes: set[str]) -> Instrument | None:
    if panel in BY_PANEL_CODE:
        return BY_PANEL_CODE[panel]
    for code in codes:
        if code in BY_TOTAL_CODE:
            return BY_TOTAL_CODE[code]
    # A form without a panel code or total: the widest instrument whose items it asks all of.
    for instrument in INSTRUMENTS:
        if instrument.item_codes and set(instrument.item_codes) <= codes:
            return instrument
    return None


def _walk(items: Iterable[Any], path: str) -> Iterator[tuple[Any, str]]:
    """Every item, depth first, with its element path (groups nest items; answers may nest them too)."""
    for i, item in enumerate(items):
        item_path = f"{path}[{i}]"
        yield item, item_path
        yield from _walk(getattr(item, "item", None) or [], f"{item_path}.item")
        for j, answer in enumerate(getattr(item, "answer", None) or []):
            yield from _walk(answer.item or [], f"{item_path}.answer[{j}].item")


def _loinc_code(codings: Iterable[Any]) -> str | None:
    return next((c.code for c in codings if c.system == LOINC and c.code), None)


def _linkid_code(link_id: str | None) -> str | None:
    """LOINC-derived forms use the question code as linkId ("44250-9", or a path "/44249-1/44250-9")."""
    last = (link_id or "").rsplit("/", 1)[-1]
    return last if _LOINC_CODE.match(last) else None


def _coding_key(system: str | None, code: str | None) -> str:
    return f"{system or ''}|{code or ''}"
