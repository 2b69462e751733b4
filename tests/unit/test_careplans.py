"""Care plan domain logic without I/O: ids, cross-field checks, If-Match, the sign-off clock, and the
FHIR CarePlan mapping (every output validated with fhir.resources' R4B models, and read back losslessly)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.careplan import CarePlan as FhirCarePlan
from fhir.resources.R4B.patient import Patient as FhirPatient
from hypothesis import given
from hypothesis import strategies as st

from app.careplans.model import (
    Activity,
    CarePlanIn,
    CarePlanOut,
    CareTeamMember,
    Goal,
    PatientAction,
    SignOff,
    assign_ids,
    check_plan,
)
from app.careplans.signoff import SignOffPolicy
from app.careplans.versioning import PreconditionError, check_if_match, etag
from app.db.models import Patient, PatientIdentifier
from app.fhir.capability import capability_statement
from app.fhir.careplan import (
    ACTIVITY_STATUS_EXT,
    SIGN_OFF_EXT,
    CarePlanMappingError,
    careplan_from_fhir,
    careplan_resource,
    subject_patient_id,
)
from app.fhir.patient import patient_resource

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PATIENT = uuid.UUID("00000000-0000-4000-8000-000000000001")
TASK = uuid.UUID("00000000-0000-4000-8000-0000000000aa")


def full_plan() -> CarePlanIn:
    return assign_ids(
        CarePlanIn(
            title="Recovery plan",
            description="after discharge",
            period_start=date(2026, 11, 1),
            period_end=date(2027, 5, 1),
            goals=[
                Goal(description="I want to sleep through the night", target_date=date(2027, 1, 15)),
                Goal(
                    description="Reduce ED visits", patient_stated=False, status="proposed", achievement="in-progress"
                ),
            ],
            activities=[
                Activity(description="Post-discharge call", task_id=TASK, status="in-progress", goal_ids=["g2"]),
                Activity(description="Refer to counselling", goal_ids=["g1"]),
            ],
            care_team=[
                CareTeamMember(name="Dr Rivera", role="PCP", reference="Practitioner/p-1"),
                CareTeamMember(name="Sam", role="caregiver"),
            ],
            patient_actions=[PatientAction(description="Walk 20 minutes", frequency="daily", goal_ids=["g1"])],
        )
    )


def as_out(plan: CarePlanIn, *, version: int = 3, sign_off: SignOff | None = None) -> CarePlanOut:
    return CarePlanOut(
        **plan.model_dump(),
        id=uuid.UUID("00000000-0000-4000-8000-0000000000cc"),
        patient_id=PATIENT,
        version=version,
        sign_off=sign_off,
        activated_at=NOW,
        created_at=NOW,
        created_by="u1",
        updated_at=NOW,
        updated_by="u2",
    )


def test_ids_are_assigned_once_and_kept() -> None:
    plan = assign_ids(CarePlanIn(goals=[Goal(id="g1", description="a"), Goal(description="b"), Goal(description="c")]))
    assert [g.id for g in plan.goals] == ["g1", "g2", "g3"]
    again = assign_ids(plan)
    assert [g.id for g in again.goals] == ["g1", "g2", "g3"]


def test_checks_name_the_offending_field() -> None:
    plan = assign_ids(
        CarePlanIn(
            period_start=date(2026, 2, 1),
            period_end=date(2026, 1, 1),
            goals=[Goal(id="x", description="a"), Goal(id="x", description="b")],
            activities=[Activity(description="a", goal_ids=["nope"])],
            patient_actions=[PatientAction(description="p", goal_ids=["x", "missing"])],
        )
    )
    fields = [e.field for e in check_plan(plan)]
    assert fields == ["period_end", "goals.1.id", "activities.0.goal_ids", "patient_actions.0.goal_ids"]
    assert check_plan(full_plan()) == []


def test_one_task_backs_one_activity() -> None:
    plan = assign_ids(CarePlanIn(activities=[Activity(description=d, task_id=TASK) for d in "ab"]))
    assert [e.field for e in check_plan(plan)] == ["activities"]


def test_if_match() -> None:
    assert etag(4) == 'W/"4"'
    check_if_match('W/"4"', 4)
    check_if_match('"4"', 4)
    check_if_match('W/"3", W/"4"', 4)
    check_if_match("*", 9)
    with pytest.raises(PreconditionError) as missing:
        check_if_match(None, 4)
    assert missing.value.status == 428
    with pytest.raises(PreconditionError) as stale:
        check_if_match('W/"3"', 4)
    assert stale.value.status == 412


POLICY = SignOffPolicy(due_days=30, renewal_days=365, due_soon_days=7)


@pytest.mark.parametrize(
    ("activated_days_ago", "signed_days_ago", "state"),
    [
        (0, None, "not-due"),
        (22, None, "not-due"),
        (23, None, "due"),
        (29, None, "due"),
        (30, None, "overdue"),
        (400, 10, "not-due"),
        (400, 359, "due"),
        (400, 365, "overdue"),
    ],
)
def test_sign_off_state(activated_days_ago: int, signed_days_ago: int | None, state: str) -> None:
    activated = NOW - timedelta(days=activated_days_ago)
    signed = None if signed_days_ago is None else NOW - timedelta(days=signed_days_ago)
    assert POLICY.state(activated, signed, NOW) == state


@given(st.integers(min_value=0, max_value=800), st.one_of(st.none(), st.integers(min_value=0, max_value=800)))
def test_sql_cutoffs_agree_with_state(activated_days_ago: int, signed_days_ago: int | None) -> None:
    """The SQL filter (cutoffs) selects exactly the plans whose state is due or overdue."""
    activated = NOW - timedelta(days=activated_days_ago, hours=3)
    signed = None if signed_days_ago is None else NOW - timedelta(days=signed_days_ago, minutes=7)
    activated_before, signed_before = POLICY.cutoffs(NOW)
    selected = activated <= activated_before if signed is None else signed <= signed_before
    assert selected == (POLICY.state(activated, signed, NOW) != "not-due")


def test_fhir_careplan_is_valid_r4_and_maps_every_part() -> None:
    sign_off = SignOff(by="dr-rivera", at=NOW, version=3, covers_current=True)
    resource = careplan_resource(as_out(full_plan(), sign_off=sign_off))
    FhirCarePlan.model_validate(resource)
    assert resource["intent"] == "plan" and resource["status"] == "active"
    assert resource["meta"]["versionId"] == "3"
    goals = {c["id"]: c for c in resource["contained"] if c["resourceType"] == "Goal"}
    assert resource["goal"] == [{"reference": "#goal-g1"}, {"reference": "#goal-g2"}]
    assert goals["goal-g1"]["expressedBy"] == {"reference": f"Patient/{PATIENT}"}
    assert goals["goal-g1"]["target"] == [{"dueDate": "2027-01-15"}]
    assert "expressedBy" not in goals["goal-g2"]
    assert goals["goal-g2"]["achievementStatus"]["coding"][0]["code"] == "in-progress"
    team = next(c for c in resource["contained"] if c["resourceType"] == "CareTeam")
    assert resource["careTeam"] == [{"reference": "#careteam"}]
    assert team["participant"][0] == {
        "role": [{"text": "PCP"}],
        "member": {"display": "Dr Rivera", "reference": "Practitioner/p-1"},
    }
    task_activity, detail_activity, patient_action = resource["activity"]
    assert task_activity["reference"] == {"reference": f"Task/{TASK}", "display": "Post-discharge call"}
    assert "detail" not in task_activity  # R4 cpl-3: reference or detail, not both
    assert {"url": ACTIVITY_STATUS_EXT, "valueCode": "in-progress"} in task_activity["extension"]
    assert detail_activity["detail"]["goal"] == [{"reference": "#goal-g1"}]
    assert patient_action["detail"]["performer"] == [{"reference": f"Patient/{PATIENT}"}]
    assert patient_action["detail"]["scheduledString"] == "daily"
    (ext,) = resource["extension"]
    assert ext["url"] == SIGN_OFF_EXT
    assert {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in ext["extension"]} == {
        "signer": "dr-rivera",
        "signedAt": NOW.isoformat(),
        "version": 3,
        "coversCurrent": True,
    }


def test_fhir_round_trip_is_lossless() -> None:
    plan = full_plan()
    resource = careplan_resource(as_out(plan))
    assert subject_patient_id(resource) == PATIENT
    assert careplan_from_fhir(resource) == plan


def test_minimal_plan_round_trips() -> None:
    plan = assign_ids(CarePlanIn(status="draft"))
    resource = careplan_resource(as_out(plan, version=1))
    FhirCarePlan.model_validate(resource)
    assert careplan_from_fhir(resource) == plan


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        ({"resourceType": "Goal"}, "resourceType"),
        ({"intent": "proposal"}, "CarePlan.intent"),
        ({"status": "bogus"}, "CarePlan.status"),
        ({"goal": [{"reference": "Goal/elsewhere"}]}, "CarePlan.goal[0]"),
        ({"goal": [{"reference": "#goal-zz"}]}, "CarePlan.goal[0]"),
        ({"activity": [{"reference": {"reference": "ServiceRequest/1"}}]}, "CarePlan.activity[0].reference"),
        ({"subject": {"reference": "Group/1"}}, "CarePlan.subject"),
        ({"period": {"start": "2027"}}, "CarePlan.period.start"),
    ],
)
def test_unusable_careplans_name_the_element(change: dict[str, object], expression: str) -> None:
    resource = careplan_resource(as_out(full_plan())) | change
    with pytest.raises(CarePlanMappingError) as err:
        subject_patient_id(resource)
        careplan_from_fhir(resource)
    assert err.value.expression == expression


def test_fhir_patient() -> None:
    patient = Patient(
        id=PATIENT,
        family_name="DOE",
        given_name="JANE",
        birth_date=date(1980, 2, 3),
        sex="F",
        deceased=False,
        updated_at=NOW,
    )
    ident = PatientIdentifier(patient_id=PATIENT, system="urn:test:mrn", value="M1", type_code="MR")
    resource = patient_resource(patient, [ident])
    FhirPatient.model_validate(resource)
    assert resource["gender"] == "female" and resource["birthDate"] == "1980-02-03" and resource["active"] is True
    assert resource["identifier"][0]["type"]["coding"][0]["code"] == "MR"
    merged_into = uuid.uuid4()
    patient.merged_into_id = merged_into
    patient.deceased_at = NOW
    merged = patient_resource(patient, [])
    FhirPatient.model_validate(merged)
    assert merged["active"] is False
    assert merged["link"] == [{"other": {"reference": f"Patient/{merged_into}"}, "type": "replaced-by"}]
    assert merged["deceasedDateTime"] == NOW.isoformat()


def test_a_coded_goal_without_text_takes_its_display() -> None:
    resource = careplan_resource(as_out(full_plan()))
    resource["contained"][0]["description"] = {"coding": [{"system": "http://snomed.info/sct", "display": "Sleep"}]}
    assert careplan_from_fhir(resource).goals[0].description == "Sleep"


def test_capability_statement_lists_careplan_and_patient() -> None:
    statement = capability_statement("http://carecoord.test/fhir", now=NOW)
    CapabilityStatement.model_validate(statement)
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    careplan, patient = resources["CarePlan"], resources["Patient"]
    assert {i["code"] for i in careplan["interaction"]} == {
        "read", "vread", "update", "history-instance", "create", "search-type",
    }  # fmt: skip
    assert careplan["versioning"] == "versioned-update" and careplan["readHistory"] is True
    assert {p["name"]: p["type"] for p in careplan["searchParam"]} == {
        "subject": "reference", "patient": "reference", "status": "token", "_id": "token",
    }  # fmt: skip
    assert {i["code"] for i in patient["interaction"]} == {"read", "search-type"}
    assert {p["name"] for p in patient["searchParam"]} == {"identifier", "_id"}
