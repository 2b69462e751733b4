"""Screening scores and positive/negative judgement, from resources written to the FHIR and LOINC specs."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse

from app.rules.config import ScreeningThresholds, load_rules
from app.screening.instruments import InstrumentId
from app.screening.scoring import (
    QuestionnaireDefinition,
    ScoringError,
    judge,
    observation_score,
    result_of,
    score_response,
)
from app.settings import DEFAULT_RULES_FILE
from tests.fhir_builder import LOINC, fixture, phq9_response

DEFAULTS = ScreeningThresholds()


def definition(questionnaire: dict[str, Any] | None = None) -> QuestionnaireDefinition:
    return QuestionnaireDefinition.of(Questionnaire.model_validate(questionnaire or fixture("questionnaire-phq9")))


def score(response: dict[str, Any], questionnaire: dict[str, Any] | None = None) -> Any:
    return score_response(
        definition(questionnaire), QuestionnaireResponse.model_validate(response), "QuestionnaireResponse"
    )


def test_phq9_total_is_summed_from_loinc_answers_when_no_total_is_given() -> None:
    result = score(phq9_response())
    assert (result.instrument, result.score, result.item9, result.computed) == (InstrumentId.PHQ9, 14, 1, True)


def test_a_given_total_wins_over_the_items() -> None:
    response = phq9_response()
    response["item"][0]["item"].append({"linkId": "phq9-total", "answer": [{"valueInteger": 20}]})
    result = score(response)
    assert (result.score, result.computed, result.item9) == (20, False, 1)


def test_answer_scores_come_from_ordinal_value_or_item_weight_extensions_first() -> None:
    # A form whose own weights differ from the LOINC defaults: every option weighs 2 on the Questionnaire.
    questionnaire = fixture("questionnaire-phq9")
    for item in questionnaire["item"][0]["item"][:9]:
        for option in item["answerOption"]:
            option["valueCoding"]["extension"][0]["valueDecimal"] = 2
    assert score(phq9_response(scores=[0] * 9), questionnaire).score == 18
    # An itemWeight extension on the answer itself beats the Questionnaire's.
    response = phq9_response(scores=[0] * 9)
    response["item"][0]["item"][0]["answer"][0]["valueCoding"]["extension"] = [
        {"url": "http://hl7.org/fhir/StructureDefinition/itemWeight", "valueDecimal": 3}
    ]
    assert score(response, questionnaire).score == 19


def test_gad7_and_phq2_forms_without_panel_code_are_recognised_by_their_items() -> None:
    codes = ["69725-0", "68509-9", "69733-4", "69734-2", "69735-9", "69689-8", "69736-7"]
    gad7 = {
        "resourceType": "Questionnaire",
        "url": "http://example.org/Questionnaire/gad7",
        "status": "active",
        "item": [{"linkId": c, "type": "choice", "text": c} for c in codes],  # LOINC codes as linkIds
    }
    answers = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9", "LA6571-9", "LA6570-1", "LA6569-3"]
    response = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": gad7["url"],
        "status": "completed",
        "item": [
            {"linkId": c, "answer": [{"valueCoding": {"system": LOINC, "code": a}}]}
            for c, a in zip(codes, answers, strict=True)
        ],
    }
    result = score(response, gad7)
    assert (result.instrument, result.score, result.item9) == (InstrumentId.GAD7, 12, None)
    phq2 = copy.deepcopy(gad7) | {"code": [{"system": LOINC, "code": "55757-9"}], "item": []}
    assert definition(phq2).instrument is InstrumentId.PHQ2


def test_unanswered_items_without_a_total_cannot_be_scored() -> None:
    response = phq9_response()
    del response["item"][0]["item"][8]
    with pytest.raises(ScoringError) as info:
        score(response)
    assert "44260-8" in info.value.reason and info.value.field == "QuestionnaireResponse.item"


def test_unknown_answer_codes_and_out_of_range_totals_are_errors() -> None:
    response = phq9_response()
    response["item"][0]["item"][2]["answer"][0]["valueCoding"] = {"system": "http://example.org/cs", "code": "often"}
    with pytest.raises(ScoringError) as info:
        score(response)
    assert info.value.field == "QuestionnaireResponse.item[0].item[2].answer[0].valueCoding"
    response = phq9_response()
    response["item"][0]["item"].append({"linkId": "phq9-total", "answer": [{"valueInteger": 30}]})
    with pytest.raises(ScoringError, match=r"outside 0\.\.27"):
        score(response)


def test_a_questionnaire_that_is_no_screening_instrument_is_refused() -> None:
    other = {"resourceType": "Questionnaire", "url": "http://example.org/q/intake", "status": "active"}
    with pytest.raises(ScoringError) as info:
        definition(other)
    assert info.value.field == "Questionnaire.code"
    with pytest.raises(ScoringError):
        definition(
            {"resourceType": "Questionnaire", "status": "active", "code": [{"system": LOINC, "code": "44249-1"}]}
        )


def test_definition_round_trips_through_the_registry_json() -> None:
    original = definition()
    assert QuestionnaireDefinition.from_json(original.to_json()) == original
    assert (
        original.item_codes["phq9-9"] == "44260-8"
        and original.option_scores["phq9-1"]["http://loinc.org|LA6571-9"] == 3
    )


@pytest.mark.parametrize(
    ("instrument", "score_value", "sex", "positive", "threshold"),
    [
        (InstrumentId.PHQ9, 10, None, True, 10),
        (InstrumentId.PHQ9, 9, None, False, 10),
        (InstrumentId.PHQ2, 3, None, True, 3),
        (InstrumentId.GAD7, 9, None, False, 10),
        (InstrumentId.AUDITC, 3, "M", False, 4),
        (InstrumentId.AUDITC, 4, "M", True, 4),
        (InstrumentId.AUDITC, 3, "F", True, 3),
        (InstrumentId.AUDITC, 3, None, True, 3),
        (InstrumentId.PHQ9_ITEM9, 0, None, False, 1),
        (InstrumentId.PHQ9_ITEM9, 1, None, True, 1),
    ],
)
def test_default_thresholds(
    instrument: InstrumentId, score_value: int, sex: str | None, positive: bool, threshold: int
) -> None:
    assert judge(DEFAULTS, instrument, score_value, sex) == (positive, threshold)


def test_thresholds_are_policy_in_the_rules_file() -> None:
    assert load_rules(DEFAULT_RULES_FILE).screening == DEFAULTS
    stricter = DEFAULTS.model_copy(update={"phq9": 15})
    assert result_of(stricter, observation_score("44261-6", 14), None).positive is False
    assert result_of(DEFAULTS, observation_score("44261-6", 14, item9=2), None).item9 == 2
