"""What makes two messages the same message (the idempotency key), and the clamp of times run ahead."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from app.consumers.hl7v2_decode import DecodeOptions, decode_adt
from app.encounters.notice import EncounterNotice
from app.encounters.skew import clamp_to_receipt
from tests.hl7_builder import adt

OPTIONS = DecodeOptions(default_zone=ZoneInfo("America/New_York"))


def notice(**fields: str) -> EncounterNotice:
    return decode_adt(adt(**fields), OPTIONS)


def test_an_identical_resend_has_the_same_key_and_other_content_under_the_id_does_not() -> None:
    first = notice(control_id="X1")
    assert notice(control_id="X1").idempotency_key == first.idempotency_key
    for change in ({"mrn": "OTHER"}, {"trigger": "A04"}, {"event_time": "20261120150000-0500"}, {"visit_number": "V9"}):
        other = notice(control_id="X1", **change)
        assert other.message_identity == first.message_identity
        assert other.idempotency_key != first.idempotency_key, change


def test_msh7_is_envelope_only_when_evn2_is_sent_and_content_when_it_is_not() -> None:
    a, b = notice(message_time="20261120143000-0500"), notice(message_time="20261120153000-0500")
    assert a.idempotency_key == b.idempotency_key
    # Without EVN-2 the event time is MSH-7's; still the envelope, so a restamped resend is the same.
    c, d = (
        replace(x, event_time=t, event_time_from_envelope=True)
        for x, t in ((a, a.event_time), (b, b.event_time + timedelta(hours=1)))
    )
    assert c.idempotency_key == d.idempotency_key


def test_times_beyond_the_skew_are_clamped_and_the_key_is_the_sent_messages() -> None:
    sent = notice(trigger="A01", event_time="20261120150000-0500", admit_time="20261120150000-0500")
    received = datetime(2026, 11, 20, 19, 30, tzinfo=UTC)  # the event time is 30 minutes ahead of this
    clamped, changed = clamp_to_receipt(sent, received, timedelta(minutes=15))
    assert [c.field for c in changed] == ["EVN-2", "PV1-44"]
    assert changed[0].ahead == timedelta(minutes=30)
    assert clamped.event_time == clamped.admit_time == received
    assert clamped.idempotency_key == sent.idempotency_key
    same, nothing = clamp_to_receipt(sent, received, timedelta(hours=1))
    assert same is sent and nothing == ()
