"""Task actions, ETags, worklist cursors, JSON Patch and the FHIR Task update rules (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.fhir.json_patch import PatchError, apply_patch
from app.fhir.task_resource import UpdateError, Wanted, action_requests, owner_of, task_resource, wanted_changes
from app.tasks.actions import Action, ActionRefused, Request, TaskState, decide, etag, parse_etag
from app.tasks.lifecycle import STATUSES, TERMINAL, check_transition
from app.tasks.worklist import Cursor, CursorError, Order, SortKey

READY = TaskState("ready", None, 1)


def req(action: Action, actor: str = "ana", **kw: Any) -> Request:
    return Request(action=action, actor=actor, supervisor=kw.pop("supervisor", False), **kw)


def refused(task: TaskState, request: Request) -> tuple[int, str]:
    with pytest.raises(ActionRefused) as exc:
        decide(task, request)
    return exc.value.status, exc.value.field


def test_claim_takes_an_unowned_task_and_refuses_anothers() -> None:
    assert decide(READY, req(Action.CLAIM)).owner == "ana"
    owned = TaskState("ready", "bo", 2)
    assert refused(owned, req(Action.CLAIM)) == (409, "owner")
    assert refused(owned, req(Action.CLAIM, supervisor=True)) == (409, "owner"), "supervisors assign, not claim"
    mine = decide(TaskState("in-progress", "ana", 3), req(Action.CLAIM))
    assert not mine.changed and mine.owner == "ana"
    assert refused(TaskState("completed", None, 3), req(Action.CLAIM)) == (409, "status")


def test_if_match_must_name_the_current_version() -> None:
    assert refused(READY, req(Action.CLAIM, if_match=2)) == (412, "If-Match")
    assert decide(READY, req(Action.CLAIM, if_match=1)).changed


def test_release_and_assign() -> None:
    owned = TaskState("in-progress", "bo", 4)
    assert refused(owned, req(Action.RELEASE)) == (409, "owner")
    assert decide(owned, req(Action.RELEASE, supervisor=True)).owner is None
    assert not decide(READY, req(Action.RELEASE)).changed
    assert refused(READY, req(Action.ASSIGN, owner="cy")) == (403, "owner")
    assert decide(owned, req(Action.ASSIGN, owner="cy", supervisor=True)).owner == "cy"


def test_status_moves_follow_the_state_machine_and_take_ownership() -> None:
    started = decide(READY, req(Action.START))
    assert (started.status, started.owner) == ("in-progress", "ana")
    assert refused(TaskState("in-progress", "ana", 2), req(Action.START)) == (409, "status")
    done = decide(TaskState("in-progress", "ana", 2), req(Action.COMPLETE, outcome="booked"))
    assert (done.status, done.business_status) == ("completed", "booked")
    assert refused(TaskState("in-progress", "bo", 2), req(Action.COMPLETE)) == (409, "owner")
    assert decide(TaskState("in-progress", "bo", 2), req(Action.CANCEL, reason="dup", supervisor=True)).owner == "bo"
    assert refused(TaskState("cancelled", None, 2), req(Action.CANCEL, reason="x")) == (409, "status")
    assert decide(READY, req(Action.SET_STATUS, status="on-hold")).status == "on-hold"
    assert refused(READY, req(Action.SET_STATUS, status="bogus")) == (409, "status")


def test_etags() -> None:
    assert etag(7) == 'W/"7"'
    assert parse_etag('W/"7"') == 7 and parse_etag('"7"') == 7 and parse_etag(None) is None and parse_etag("*") is None
    with pytest.raises(ValueError):
        parse_etag('W/"seven"')


@given(
    sort=st.sampled_from(list(SortKey)),
    order=st.sampled_from(list(Order)),
    stamp=st.datetimes(timezones=st.just(UTC)),
    rank=st.integers(0, 3),
)
def test_cursor_round_trips(sort: SortKey, order: Order, stamp: datetime, rank: int) -> None:
    key = ((rank,) if sort is SortKey.PRIORITY else ()) + (stamp, uuid.uuid4())
    cursor = Cursor(sort, order, key)
    assert Cursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize("text", ["", "bm9wZQ", "eyJzIjogImR1ZSJ9", "!!!"])
def test_forged_cursors_are_refused(text: str) -> None:
    with pytest.raises(CursorError):
        Cursor.decode(text)


@pytest.mark.parametrize("rank", [-1, 4, 10**30, True])
def test_a_cursor_with_a_priority_rank_out_of_range_is_refused(rank: object) -> None:
    stamp = datetime(2026, 11, 24, tzinfo=UTC)
    forged = Cursor(SortKey.PRIORITY, Order.ASC, (rank, stamp, uuid.uuid4())).encode()
    with pytest.raises(CursorError):
        Cursor.decode(forged)


def test_json_patch_operations() -> None:
    doc = {"a": {"b": [1, 2]}, "c": "x"}
    assert apply_patch(doc, [{"op": "add", "path": "/a/b/-", "value": 3}])["a"]["b"] == [1, 2, 3]
    assert apply_patch(doc, [{"op": "replace", "path": "/c", "value": "y"}])["c"] == "y"
    assert "c" not in apply_patch(doc, [{"op": "remove", "path": "/c"}])
    moved = apply_patch(doc, [{"op": "move", "from": "/c", "path": "/d"}])
    assert moved["d"] == "x" and "c" not in moved
    assert apply_patch(doc, [{"op": "copy", "from": "/a/b/0", "path": "/e"}])["e"] == 1
    assert apply_patch(doc, [{"op": "test", "path": "/a/b/1", "value": 2}]) == doc
    assert doc == {"a": {"b": [1, 2]}, "c": "x"}, "the input is not modified"
    for bad in (
        [{"op": "test", "path": "/c", "value": "z"}],
        [{"op": "remove", "path": "/zz"}],
        [{"op": "replace", "path": "/a/b/5", "value": 1}],
        [{"op": "jump", "path": "/c"}],
        [{"op": "add", "path": "c", "value": 1}],
        {"op": "add"},
    ):
        with pytest.raises(PatchError):
            apply_patch(doc, bad)


def _task(**kw: Any) -> SimpleNamespace:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    fields = dict(
        id=uuid.uuid4(), version=2, updated_at=now, created_at=now, due_at=now, status="ready", business_status=None,
        priority="routine", type="post-discharge-contact", patient_id=uuid.uuid4(), encounter_id=None, owner=None,
    )  # fmt: skip
    return SimpleNamespace(**(fields | kw))


def test_task_resource_maps_the_row() -> None:
    task = _task(owner="ana", business_status="booked")
    body = task_resource(task, type_system="urn:t", user_system="urn:u")  # type: ignore[arg-type]
    assert body["meta"] == {"versionId": "2", "lastUpdated": "2026-11-20T12:00:00Z"}
    assert body["owner"]["identifier"] == {"system": "urn:u", "value": "ana"}
    assert (
        body["businessStatus"] == {"text": "booked"} and body["restriction"]["period"]["end"] == "2026-11-20T12:00:00Z"
    )
    assert "encounter" not in body and body["for"]["reference"] == f"Patient/{task.patient_id}"


def test_updates_may_change_status_and_owner_only() -> None:
    task = _task()
    current = task_resource(task, type_system="urn:t", user_system="urn:u")  # type: ignore[arg-type]
    tid = str(task.id)
    wanted = wanted_changes(
        current, current | {"status": "in-progress", "owner": {"reference": "Practitioner/ana"}, "meta": {}},
        resource_id=tid, user_system="urn:u",
    )  # fmt: skip
    assert (wanted.status, wanted.owner) == ("in-progress", "ana")
    with pytest.raises(UpdateError) as exc:
        wanted_changes(current, current | {"priority": "stat"}, resource_id=tid, user_system="urn:u")
    assert exc.value.expressions == ["Task.priority"]
    with pytest.raises(UpdateError):
        wanted_changes(current, current | {"id": "x"}, resource_id=tid, user_system="urn:u")
    with pytest.raises(UpdateError):
        owner_of({"identifier": {"system": "urn:other", "value": "x"}}, "urn:u")
    assert owner_of({"identifier": {"value": "x"}}, "urn:u") == "x"


def test_an_update_becomes_ownership_then_status_actions() -> None:
    def actions(status: str, owner: str | None, wanted: Wanted, supervisor: bool = False) -> list[Action]:
        found = action_requests(status=status, owner=owner, wanted=wanted, actor="ana", supervisor=supervisor)
        return [r.action for r in found]

    assert actions("ready", None, Wanted("in-progress", "ana", None, None)) == [Action.CLAIM, Action.START]
    assert actions("ready", "bo", Wanted("ready", "ana", None, None)) == [Action.CLAIM]
    assert actions("ready", "bo", Wanted("ready", "ana", None, None), supervisor=True) == [Action.ASSIGN]
    assert actions("ready", "ana", Wanted("ready", None, None, None)) == [Action.RELEASE]
    assert actions("in-progress", "ana", Wanted("completed", "ana", "ok", None)) == [Action.COMPLETE]
    assert actions("ready", "ana", Wanted("on-hold", "ana", None, None)) == [Action.SET_STATUS]
    assert actions("ready", "ana", Wanted("ready", "ana", None, None)) == []


REQUESTS = st.builds(
    Request,
    action=st.sampled_from(list(Action)),
    actor=st.sampled_from(["ana", "ben"]),
    supervisor=st.booleans(),
    if_match=st.none() | st.integers(0, 8),
    owner=st.none() | st.sampled_from(["ana", "ben", "cy"]),
    status=st.none() | st.sampled_from([*sorted(STATUSES), "bogus"]),
    outcome=st.none() | st.just("booked"),
    reason=st.none() | st.just("moved away"),
)


@given(st.lists(REQUESTS, max_size=25))
def test_no_illegal_transition_is_reachable_through_task_actions(requests: list[Request]) -> None:
    """Every action the API (and a FHIR Task update, which becomes actions) can ask for, in any order
    from any person: the status only ever moves along the FHIR Task state machine, a terminal task
    stays terminal, nobody takes a task another owns without being a supervisor, and a stale If-Match
    changes nothing."""
    task = READY
    for request in requests:
        try:
            change = decide(task, request)
        except ActionRefused as refusal:
            assert refusal.status in (403, 409, 412, 422)
            continue
        assert request.if_match in (None, task.version)
        if change.status != task.status:
            check_transition(task.status, change.status)  # raises on an illegal move
        if task.status in TERMINAL:
            assert change.status == task.status or change.status == "entered-in-error"
        if task.owner not in (None, change.owner) and change.owner != request.owner:
            assert request.supervisor or task.owner == request.actor, "took someone else's task"
        task = TaskState(change.status, change.owner, task.version + (1 if change.changed else 0))
