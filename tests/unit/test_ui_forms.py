"""Pure pieces of the web UI: the care plan form's document, where a form may return to, CSRF tokens."""

from __future__ import annotations

from app.careplans.model import CarePlanIn
from app.ui.careplan_form import plan_document
from app.ui.rendering import safe_next
from app.ui.session import csrf_matches, csrf_token


def test_the_form_becomes_a_care_plan_keeping_ids_links_and_dropping_blank_rows() -> None:
    items = [
        ("title", " Plan "), ("status", "active"), ("period_end", ""),
        ("goals-0-id", "g1"), ("goals-0-description", "Walk"), ("goals-0-patient_stated", "false"),
        ("goals-0-target_date", "2027-01-15"), ("goals-0-achievement", ""),
        ("goals-1-id", ""), ("goals-1-description", "  "),  # a spare blank row
        ("activities-0-id", "a1"), ("activities-0-description", "Visit"), ("activities-0-goal_ids", "g1, ,g1"),
        ("activities-0-task_id", "6f1c1c1e-4f43-4c55-9d86-0d6f9f2f2f10"),
        ("care_team-0-name", "Dr. P"), ("care_team-0-role", "PCP"), ("care_team-0-reference", ""),
        ("patient_actions-3-description", "Weigh"), ("patient_actions-3-frequency", "daily"),
        ("goals-999-description", "beyond the row limit"), ("unknown-0-x", "ignored"), ("csrf", "abc"),
    ]  # fmt: skip
    document = plan_document(items)
    assert document["title"] == "Plan" and "period_end" not in document
    assert document["goals"] == [{"id": "g1", "description": "Walk", "patient_stated": False,
                                  "target_date": "2027-01-15"}]  # fmt: skip
    assert document["activities"][0]["goal_ids"] == ["g1", "g1"]
    assert document["care_team"] == [{"name": "Dr. P", "role": "PCP"}]
    assert document["patient_actions"] == [{"description": "Weigh", "frequency": "daily"}]
    plan = CarePlanIn.model_validate(document)  # what the API then checks (duplicate goal links included)
    assert plan.goals[0].patient_stated is False and str(plan.activities[0].task_id).startswith("6f1c")


def test_forms_return_only_to_pages_of_this_ui() -> None:
    assert safe_next("/ui/patients/1#care-plan", "/ui/worklist") == "/ui/patients/1#care-plan"
    for hostile in ("https://evil.example/ui/", "//evil.example/ui/x", "/ui//evil", "/api/x", None, "/ui\\x"):
        assert safe_next(hostile, "/ui/worklist") == "/ui/worklist"


def test_csrf_tokens_are_bound_to_the_session() -> None:
    assert csrf_matches("token-a", csrf_token("token-a"))
    assert not csrf_matches("token-a", csrf_token("token-b"))
    assert not csrf_matches("token-a", None) and not csrf_matches("token-a", "")
