"""SMART scopes: v2 `cruds` and v1 `read`/`write`/`*` forms, contexts, and the method -> interaction map."""

from __future__ import annotations

import pytest

from app.api.auth import Principal
from app.api.problems import Problem
from app.api.scopes import Grant, allows, check_scope, interaction_for, parse_scopes


def principal(scope: str | None) -> Principal:
    return Principal("u", frozenset({"PMC"}), frozenset(), parse_scopes(scope) if scope is not None else None)


@pytest.mark.parametrize(
    ("claim", "resource", "granted", "refused"),
    [
        ("user/Task.rs", "Task", "rs", "cud"),
        ("user/CarePlan.cruds", "CarePlan", "cruds", ""),
        ("user/*.cruds", "Observation", "cruds", ""),
        ("user/Task.read", "Task", "rs", "cud"),  # v1
        ("user/Task.write", "Task", "cud", "rs"),  # v1
        ("user/Task.*", "Task", "cruds", ""),  # v1
        ("system/Encounter.c", "Encounter", "c", "ruds"),
        ("user/Task.rus", "Task", "rus", "cd"),
    ],
)
def test_grants(claim: str, resource: str, granted: str, refused: str) -> None:
    grants = parse_scopes(claim)
    assert all(allows(grants, resource, i) for i in granted)  # type: ignore[arg-type]
    assert not any(allows(grants, resource, i) for i in refused)  # type: ignore[arg-type]
    assert not allows(grants, "Consent", "r") or claim.startswith("user/*")


@pytest.mark.parametrize(
    "claim",
    [
        "user/Task.sr",  # out of cruds order
        "user/Task.rr",  # repeated
        "user/Task.x",
        "patient/Task.rs",  # needs a patient launch context carecoord does not offer
        "user/Task.rs?status=ready",  # granular: not enforceable here
        "openid fhirUser launch/patient",
        "user/task.rs",  # resource types are capitalised
        "",
    ],
)
def test_scopes_carecoord_cannot_honour_grant_nothing(claim: str) -> None:
    assert parse_scopes(claim) == ()


def test_a_claim_is_the_union_of_its_scopes() -> None:
    grants = parse_scopes("openid user/Task.rs  user/CarePlan.c")
    assert grants == (Grant("Task", frozenset("rs")), Grant("CarePlan", frozenset("c")))


@pytest.mark.parametrize(
    ("method", "has_id", "expected"),
    [("GET", True, "r"), ("GET", False, "s"), ("POST", False, "c"), ("POST", True, "u"), ("PUT", True, "u"),
     ("PATCH", True, "u"), ("DELETE", True, "d")],
)  # fmt: skip
def test_interaction_from_method(method: str, has_id: bool, expected: str) -> None:
    assert interaction_for(method, has_id) == expected


def test_check_scope_refuses_with_403_naming_scope() -> None:
    with pytest.raises(Problem) as err:
        check_scope(principal("user/Task.rs"), ("Task",), "u", required=True)
    assert err.value.status == 403 and err.value.field == "scope"
    check_scope(principal("user/Task.rus"), ("Task",), "u", required=True)
    # every listed type must be granted
    with pytest.raises(Problem):
        check_scope(principal("user/Task.rs"), ("Task", "Consent"), "r", required=True)


def test_a_token_without_scope_claim_passes_only_where_scopes_are_not_required() -> None:
    check_scope(principal(None), ("Task",), "d", required=False)
    with pytest.raises(Problem) as err:
        check_scope(principal(None), ("Task",), "r", required=True)
    assert err.value.status == 403
    # an empty claim is a token that may do nothing, not an unscoped one
    with pytest.raises(Problem):
        check_scope(principal(""), ("Task",), "r", required=False)
