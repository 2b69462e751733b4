"""HL7 v2 original-mode acknowledgments (ACK: MSH, MSA, ERR) for the MLLP listener. Pure: no I/O.

Which acknowledgment code (HL7 table 0008, MSA-1), following the original-mode processing rules of
HL7 v2 chapter 2 ("Message processing rules", 2.9.2 in v2.5.1):

- The responding side first validates the message syntactically and checks MSH-9 (message type),
  MSH-11 (processing id) and MSH-12 (version id); "if it fails, a reject message is constructed by the
  protocol software" -- MSA-1 = **AR**. So: no parseable MSH, an unreadable character set (MSH-18), a
  missing or unsupported MSH-9 (only ADT is accepted), and a frame larger than we are able to read
  (`CARECOORD_INGEST_MAX_BYTES`, refused before the message is read at all) are answered **AR**.
- A message that passes those checks but whose content the application cannot process gets an error
  response with the error in an ERR segment -- MSA-1 = **AE**: "a processing problem related to the
  message or its structure occurred at the receiving application. The sending system should diagnose and
  correct the problem before attempting to resend the message." So: a missing MSH-10, MSH-4, MSH-7, PID,
  PID-3, an unreadable timestamp, ... are answered **AE**.
- A message the application fails to process for reasons "unrelated to the message or its structure"
  (system down, internal error) is also **AR**: "the sending system should resend the message after an
  appropriate period, without change to the message" (HL7's own vocabulary: "failed to process message
  for reason unrelated to content or format. Original message sender must decide on whether to
  automatically send message again"). So a broker that did not acknowledge the record (or any unexpected
  internal failure) is answered **AR** with ERR-3 = 207 (application internal error): the one AR an
  interface engine should resend unchanged. Resending is safe: events are idempotent on sending
  facility + MSH-10.
- **AA** only after the broker acknowledged the record.

ERR-3 is a code from HL7 table 0357 (`code^text^HL70357`): 100 segment sequence error (a required
segment is missing: no MSH, no PID, ...), 101 required field missing, 102 data type error (a value that
cannot be read, e.g. a malformed timestamp), 104 value too long (oversize frame; the code was added
to table 0357 in v2.7 -- older receivers still get AR and the text), 200 unsupported message type,
207 application internal error (also the catch-all for a value that is well-formed but unusable, such as a
discharge before the admission). The table's own comments pair 100-104 with "Error" and 200-207 with
"Rejection". ERR-4 severity (table 0516) is always E. ERR-2 (ERL) locates the field as
`segment^sequence^field` (e.g. `MSH^1^10`) when the decoder named one; ERR-7 and MSA-3 carry the reason
text for the sender's interface analyst (the sender's own data, never logged here); ERR-1 is added for
senders declaring a version before 2.5, which only know ERR-1.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from enum import StrEnum

import hl7

from app import clock

#: MSH-3 of our acknowledgments when the message did not name us in MSH-5.
DEFAULT_APPLICATION = "CARECOORD"
DEFAULT_VERSION = "2.5.1"

_TABLE_0357 = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "104": "Value too long",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "207": "Application internal error",
}
# MSH fields checked by the protocol layer in original mode (2.9.2), plus MSH-18: a message we cannot
# even read as text fails syntactic validation.
_PROTOCOL_FIELDS = {9, 11, 12, 18}
_LOCATION = re.compile(r"^([A-Z][A-Z0-9]{2})(?:-(\d+)(?:\.(\d+))?)?$")
MSA3_MAX = 80  # MSA-3 is ST(80) in v2.5.1


class AckCode(StrEnum):
    AA = "AA"  # application accept
    AE = "AE"  # application error: the sender should correct the message
    AR = "AR"  # application reject: protocol-level refusal, or our failure (resend later if ERR-3 = 207)


@dataclass(frozen=True, slots=True)
class AckError:
    """One ERR segment. `location` is the decoder's field name ("MSH-10", "PID", "PV1-45") or None."""

    code: str
    diagnostic: str
    location: str | None = None
    severity: str = "E"

    @property
    def code_text(self) -> str:
        return _TABLE_0357.get(self.code, "")


@dataclass(frozen=True, slots=True)
class Verdict:
    ack_code: AckCode
    error: AckError | None = None


ACCEPTED = Verdict(AckCode.AA)


def for_decode_error(reason: str, field: str | None) -> Verdict:
    """The verdict for a message `publish_hl7v2` refused (DecodeError reason and field)."""
    if field == "size":  # the handler's own size check
        return Verdict(AckCode.AR, AckError("104", reason))
    parsed = _LOCATION.match(field or "")
    segment = parsed.group(1) if parsed else None
    field_no = int(parsed.group(2)) if parsed and parsed.group(2) else None
    lowered = reason.lower()
    if segment is not None and field_no is None:
        code = "100"  # a whole segment missing, or no usable MSH at all
    elif "unsupported message type" in lowered:
        code = "200"
    elif "unsupported" in lowered and "event" in lowered:
        code = "201"
    elif "required" in lowered or "empty" in lowered:
        code = "101"
    elif "not an hl7" in lowered or "not valid" in lowered or "out of range" in lowered:
        code = "102"
    else:
        code = "207"
    protocol = segment == "MSH" and (field_no is None or field_no in _PROTOCOL_FIELDS)
    return Verdict(AckCode.AR if protocol else AckCode.AE, AckError(code, reason, field if parsed else None))


def for_oversize(size: int, limit: int | None) -> Verdict:
    """A permanent refusal: over the ingest limit, or more than the event broker takes (`limit` None)."""
    text = (
        f"message is larger than the limit of {limit} bytes (read {size})"
        if limit is not None
        else f"message is larger than the event broker accepts (read {size} bytes); do not resend it unchanged"
    )
    return Verdict(AckCode.AR, AckError("104", text))


def for_broker_failure() -> Verdict:
    return Verdict(AckCode.AR, AckError("207", "message not stored: event broker unavailable; resend it unchanged"))


def for_internal_error() -> Verdict:
    return Verdict(AckCode.AR, AckError("207", "message not stored: internal error; resend it unchanged"))


def build_ack(raw: bytes, verdict: Verdict, *, application: str = DEFAULT_APPLICATION) -> bytes:
    """The ACK for `raw` (one message, without MLLP framing), encoded like the message.

    The header is salvaged from the first MSH segment found, so even a message the decoder refused
    is acknowledged with its own MSH-10 in MSA-2 and the sender/receiver swapped (python-hl7's
    `create_ack`). Without any usable MSH the ACK is built from scratch: `ACK` with an empty MSA-2.
    """
    text, encoding = _text(raw)
    header = _header(text)
    if header is None:
        header = _header("MSH|^~\\&|")
        assert header is not None
    msh = header.segment("MSH")
    receiver_app = str(msh(5)).strip()
    ack = header.create_ack(str(verdict.ack_code), application=receiver_app or application, facility=str(msh(6)))
    # create_ack stamps MSH-7 in UTC without saying so; say so.
    ack.assign_field(clock.now().strftime("%Y%m%d%H%M%S+0000"), "MSH", 1, 7)
    error = verdict.error
    if error is not None:
        ack.assign_field(ack.escape(_truncate(error.diagnostic, MSA3_MAX)), "MSA", 1, 3)
        ack.append(_err_segment(ack, error, _version(str(msh(12)))))
    return _serialise(ack).encode(encoding, errors="replace")


def _err_segment(ack: hl7.Message, error: AckError, version: tuple[int, ...]) -> hl7.Segment:
    err = ack.create_segment([ack.create_field(["ERR"])])
    location = _location_components(error.location)
    if version < (2, 5):
        # ERR-1 (ELD) is how senders before v2.5 read the error: segment^sequence^field^code&text&system.
        for i, part in enumerate(location[:3], start=1):
            err.assign_field(part, 1, 1, i)
        for i, part in enumerate((error.code, error.code_text, "HL70357"), start=1):
            err.assign_field(part, 1, 1, 4, i)
    for i, part in enumerate(location, start=1):
        err.assign_field(part, 2, 1, i)
    for i, part in enumerate((error.code, error.code_text, "HL70357"), start=1):
        err.assign_field(part, 3, 1, i)
    err.assign_field(error.severity, 4)
    err.assign_field(ack.escape(_truncate(error.diagnostic, 2048)), 7)
    return err


def _location_components(location: str | None) -> list[str]:
    """ERL components of a decoder field name: MSH-10 -> [MSH, 1, 10]; PID -> [PID, 1]; PID-3.1 -> [PID, 1, 3, 1, 1]."""
    parsed = _LOCATION.match(location or "")
    if not parsed:
        return []
    segment, field_no, component = parsed.groups()
    parts = [segment, "1"]
    if field_no:
        parts.append(field_no)
        if component:
            parts += ["1", component]
    return parts


def _text(raw: bytes) -> tuple[str, str]:
    raw = raw.removeprefix(codecs.BOM_UTF8)  # as the decoder does: the ACK answers the message, not the mark
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"


def _header(text: str) -> hl7.Message | None:
    """The first MSH segment, padded so that `create_ack` finds every field it copies; None if unusable."""
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    line = next((ln for ln in lines if ln.startswith("MSH")), None)
    if line is None:  # junk before MSH inside the frame
        line = next((ln[ln.index("MSH") :] for ln in lines if "MSH" in ln), None)
    if line is None or len(line) < 6:
        return None
    field_sep = line[3]
    if field_sep.isalnum() or field_sep.isspace():
        return None
    fields = line.split(field_sep)
    encoding_chars = fields[1]
    if len(encoding_chars) < 2 or encoding_chars[0].isalnum() or encoding_chars[0].isspace():
        return None
    fields += [""] * (12 - len(fields))
    component_sep = encoding_chars[0]
    if component_sep not in fields[8]:
        fields[8] += component_sep  # MSH-9 without a trigger component: create_ack reads MSH-9.2
    fields[10] = fields[10] or "P"
    fields[11] = fields[11] or DEFAULT_VERSION
    try:
        return hl7.parse(field_sep.join(fields))
    except Exception:
        return None


def _version(raw: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", raw.split("^", 1)[0])
    return tuple(int(p) for p in parts[:3]) or (2, 5, 1)


def _truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _serialise(ack: hl7.Message) -> str:
    return str(ack).rstrip("\r") + "\r"
