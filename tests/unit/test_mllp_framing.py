"""MLLP deframing and HL7 ACK building: pure functions, no sockets."""

from __future__ import annotations

import hl7
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.ingest.hl7_ack import ACCEPTED, AckCode, build_ack, for_broker_failure, for_decode_error, for_oversize
from app.ingest.mllp import Frame, MllpDecoder, OversizeFrame, frame
from tests.hl7_builder import adt

LIMIT = 1024


def ack_of(raw: bytes | str, verdict=ACCEPTED) -> hl7.Message:
    data = raw.encode() if isinstance(raw, str) else raw
    out = build_ack(data, verdict)
    assert out.endswith(b"\r") and b"\n" not in out
    return hl7.parse(out.decode())


# --- framing ---------------------------------------------------------------------------------------


def test_frame_wraps_in_start_and_end_blocks() -> None:
    assert frame(b"MSH|x") == b"\x0bMSH|x\x1c\x0d"


def test_one_frame_in_one_read() -> None:
    assert MllpDecoder(LIMIT).feed(frame(b"MSH|a")) == [Frame(b"MSH|a")]


def test_several_frames_in_one_read_and_junk_between_them_is_dropped() -> None:
    d = MllpDecoder(LIMIT)
    assert d.feed(b"noise" + frame(b"one") + b"\r\n" + frame(b"two")) == [Frame(b"one"), Frame(b"two")]
    assert d.junk_bytes == len(b"noise") + 2
    assert not d.in_frame


@given(st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=30))
def test_frames_split_at_any_byte_boundary_reassemble(cuts: list[int]) -> None:
    wire = b"junk" + frame(b"MSH|first") + frame(b"MSH|second\rPID|1")
    d = MllpDecoder(LIMIT)
    got: list[Frame | OversizeFrame] = []
    pos = 0
    for size in cuts * 10:
        got += d.feed(wire[pos : pos + size])
        pos += size
    got += d.feed(wire[pos:])
    assert got == [Frame(b"MSH|first"), Frame(b"MSH|second\rPID|1")]


def test_end_block_split_from_its_carriage_return() -> None:
    d = MllpDecoder(LIMIT)
    assert d.feed(b"\x0bMSH|a\x1c") == []
    assert d.in_frame
    assert d.feed(b"\x0d") == [Frame(b"MSH|a")]


def test_a_lone_end_block_is_data_not_an_end() -> None:
    d = MllpDecoder(LIMIT)
    assert d.feed(b"\x0bA\x1cB") == []
    assert d.feed(b"\x1c") == []
    assert d.feed(b"C\x1c\x0d") == [Frame(b"A\x1cB\x1cC")]


def test_a_new_start_block_abandons_an_unterminated_frame() -> None:
    d = MllpDecoder(LIMIT)
    assert d.feed(b"\x0bhalf a mess") == []
    assert d.feed(b"age\x0bMSH|b\x1c\x0d") == [Frame(b"MSH|b")]
    assert d.abandoned_frames == 1


def test_partial_frame_is_reported_until_completed() -> None:
    d = MllpDecoder(LIMIT)
    d.feed(b"\x0bMSH|part")
    assert d.in_frame and d.frame_bytes == len(b"MSH|part")


def test_frame_at_the_limit_is_kept_and_one_byte_more_is_oversize() -> None:
    d = MllpDecoder(LIMIT)
    assert d.feed(frame(b"x" * LIMIT)) == [Frame(b"x" * LIMIT)]
    [event] = d.feed(frame(b"y" * (LIMIT + 1)))
    assert isinstance(event, OversizeFrame) and event.size == LIMIT + 1


def test_oversize_frame_is_not_buffered_but_its_head_is_kept() -> None:
    prefix = b"MSH|^~\\&|HEAD"
    d = MllpDecoder(LIMIT, head_bytes=16)
    assert d.feed(b"\x0b" + prefix) == []
    for _ in range(100):
        assert d.feed(b"z" * 4096) == []
        assert len(d._buf) == 0  # counted, not kept
    events = d.feed(b"tail\x1c\x0d" + frame(b"MSH|next"))
    assert events == [OversizeFrame((prefix + b"zzzz")[:16], len(prefix) + 409600 + 4), Frame(b"MSH|next")]


# --- acknowledgments -------------------------------------------------------------------------------


def test_aa_swaps_sender_and_receiver_and_echoes_the_control_id() -> None:
    ack = ack_of(adt(control_id="CTRL-42"))
    msh = ack.segment("MSH")
    assert [str(msh(i)) for i in (3, 4, 5, 6)] == ["CARECOORD", "ACO", "ADT1", "GOODHEALTH"]
    assert str(msh(9)) == "ACK^A03^ACK"
    assert str(msh(10)) and str(msh(10)) != "CTRL-42"
    assert (str(msh(11)), str(msh(12))) == ("P", "2.5.1")
    assert str(msh(7)).endswith("+0000")
    assert [str(s(0)) for s in ack] == ["MSH", "MSA"]
    assert (str(ack.segment("MSA")(1)), str(ack.segment("MSA")(2))) == ("AA", "CTRL-42")


def test_ae_for_missing_msh10_names_the_field_in_err() -> None:
    ack = ack_of(adt(control_id=""), for_decode_error("MSH-10 is required", "MSH-10"))
    assert str(ack.segment("MSA")(1)) == "AE"
    err = ack.segment("ERR")
    assert str(err(2)) == "MSH^1^10"
    assert str(err(3)) == "101^Required field missing^HL70357"
    assert str(err(4)) == "E"
    assert str(err(7)) == "MSH-10 is required"
    assert str(err(1)) == ""  # ERR-1 is for senders before v2.5 only


@pytest.mark.parametrize(
    ("reason", "field", "code", "err3", "err2"),
    [
        ("not an HL7 v2 message: first segment must be MSH", "MSH", AckCode.AR, "100", "MSH^1"),
        ("unparseable HL7 v2 message: ValueError", "MSH", AckCode.AR, "100", "MSH^1"),
        ("unsupported message type 'ORU': expected ADT", "MSH-9", AckCode.AR, "200", "MSH^1^9"),
        ("trigger event is required (MSH-9.2 or EVN-1)", "MSH-9", AckCode.AR, "101", "MSH^1^9"),
        ("message is not valid UTF-8 and MSH-18 does not declare 8859/1", "MSH-18", AckCode.AR, "102", "MSH^1^18"),
        ("MSH-4 sending facility is required", "MSH-4", AckCode.AE, "101", "MSH^1^4"),
        ("PID segment is required", "PID", AckCode.AE, "100", "PID^1"),
        ("PID-3 patient identifier list is empty", "PID-3", AckCode.AE, "101", "PID^1^3"),
        ("PID-7: not an HL7 date: '1970-04-12'", "PID-7", AckCode.AE, "102", "PID^1^7"),
        ("PV1-45: not an HL7 timestamp: 'yesterday'", "PV1-45", AckCode.AE, "102", "PV1^1^45"),
        ("PV1-45 discharge time is before PV1-44 admit time", "PV1-45", AckCode.AE, "207", "PV1^1^45"),
        ("something else", None, AckCode.AE, "207", ""),
        ("message is 2000000 bytes; the limit is 1048576", "size", AckCode.AR, "104", ""),
    ],
)
def test_decode_errors_map_to_ack_codes_and_table_0357(
    reason: str, field: str | None, code: AckCode, err3: str, err2: str
) -> None:
    verdict = for_decode_error(reason, field)
    assert verdict.ack_code is code
    ack = ack_of(adt(), verdict)
    assert str(ack.segment("MSA")(1)) == code
    err = ack.segment("ERR")
    assert str(err(3)(1)(1)) == err3 and str(err(2)) == err2 and str(err(4)) == "E"


def test_reason_text_is_escaped_and_msa3_is_short() -> None:
    reason = "PID-7: not an HL7 date: '19|70^04&12~x\\y' " + "z" * 200
    ack = ack_of(adt(), for_decode_error(reason, "PID-7"))
    assert len(ack.segment("ERR")) == 8  # the delimiters in the text did not create fields
    assert str(ack.segment("ERR")(7)).startswith("PID-7: not an HL7 date: '19\\F\\70\\S\\04\\T\\12\\R\\x\\E\\y'")
    assert len(str(ack.segment("MSA")(3))) <= 80 + 10 * 3


def test_broker_failure_is_ar_207_so_the_sender_resends() -> None:
    ack = ack_of(adt(control_id="C1"), for_broker_failure())
    assert (str(ack.segment("MSA")(1)), str(ack.segment("MSA")(2))) == ("AR", "C1")
    assert str(ack.segment("ERR")(3)) == "207^Application internal error^HL70357"


def test_oversize_is_ar_104_quoting_the_control_id_from_the_head() -> None:
    head = adt(control_id="BIG-1").encode()[:200]
    ack = ack_of(head, for_oversize(5_000_000, 1_048_576))
    assert (str(ack.segment("MSA")(1)), str(ack.segment("MSA")(2))) == ("AR", "BIG-1")
    assert str(ack.segment("ERR")(3)(1)(1)) == "104"


def test_no_msh_at_all_still_gets_an_ar_built_from_scratch() -> None:
    ack = ack_of(b"\x00\xffhello world", for_decode_error("not an HL7 v2 message: first segment must be MSH", "MSH"))
    msh = ack.segment("MSH")
    assert str(msh(3)) == "CARECOORD" and str(msh(9)) == "ACK^^ACK" and str(msh(12)) == "2.5.1"
    assert (str(ack.segment("MSA")(1)), str(ack.segment("MSA")(2))) == ("AR", "")
    assert str(ack.segment("ERR")(3)(1)(1)) == "100"


@pytest.mark.parametrize(
    "raw",
    [
        "MSH|^~\\&|A|B",  # truncated header
        "MSH|^~\\&|A|B|C|D|2026||ADT|X1|P|2.5.1",  # MSH-9 without a trigger
        "MSH|^~\\&|||||||||||",
        "junk\rMSH|^~\\&|A|B|C|D|2026||ADT^A03|X1",
        "MSH",
        "MSHx",
    ],
)
def test_damaged_headers_still_get_an_ack(raw: str) -> None:
    ack = ack_of(raw, for_decode_error("broken", "MSH"))
    assert str(ack.segment("MSA")(1)) == "AR"
    assert str(ack.segment("MSH")(9)).startswith("ACK^")


def test_header_salvaged_after_junk_keeps_the_control_id() -> None:
    ack = ack_of("junk\rMSH|^~\\&|A|B|C|D|2026||ADT^A03|X1|P|2.5.1", for_decode_error("x", "MSH"))
    assert str(ack.segment("MSA")(2)) == "X1"
    assert [str(ack.segment("MSH")(i)) for i in (3, 4, 5, 6)] == ["C", "D", "A", "B"]


def test_senders_before_2_5_also_get_err_1() -> None:
    ack = ack_of(adt(version="2.3"), for_decode_error("MSH-10 is required", "MSH-10"))
    assert str(ack.segment("MSH")(12)) == "2.3"
    assert str(ack.segment("ERR")(1)) == "MSH^1^10^101&Required field missing&HL70357"


def test_latin1_message_gets_a_latin1_ack() -> None:
    raw = "MSH|^~\\&|APP|CLINIQUE É|CARECOORD|ACO|2026||ADT^A03|X|P|2.5.1|||||||8859/1".encode("latin-1")
    out = build_ack(raw, ACCEPTED)
    assert "CLINIQUE É".encode("latin-1") in out
