"""A dead letter's listed reason never quotes the rejected message's field values (names, dates,
identifiers): those stay in the payload, behind its permission (app/api/dead_letters.py).

Decoders, pydantic and library exceptions word their errors freely, often with the offending value in
them (`PID-7: not a timestamp '19800231'`). Rather than trusting every message, the reason is cleaned where
it is stored (app/state/inbound.py record_rejected, app/state/dead_letters.py update_rejection):
- anything in quotes (`'...'`, `"..."`) and pydantic's `input_value=...` is withheld;
- any value of the payload itself (an HL7 v2 field, component or repetition; a JSON string or number,
  except structure: `resourceType`, `system`, `url`) of at least `MIN_VALUE_LENGTH` characters that still
  appears in the reason is withheld.
What remains names the field and the rule, e.g. `PID-7: not a timestamp (value withheld)`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

WITHHELD = "(value withheld)"
MIN_VALUE_LENGTH = 3  # shorter values (a patient class `I`, a sex `F`) are codes, not identifying
# JSON keys whose values are structure, not data: a reason may name the resource type and code system.
STRUCTURAL_KEYS = frozenset({"resourceType", "system", "url"})
_QUOTED = re.compile(r"""'[^'\n]*'|"[^"\n]*"|input_value=\S+""")
_HL7_SPLIT = re.compile(r"[\r\n|^~&\\]")
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")


def _json_leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in STRUCTURAL_KEYS:
                yield from _json_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_leaves(item)
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        yield str(value)


def payload_values(payload: bytes) -> set[str]:
    """The values a rejected payload carries, as text (JSON leaves, or HL7 v2 pieces)."""
    text = payload.decode("utf-8", errors="replace").lstrip("\ufeff")
    try:
        leaves = set(_json_leaves(json.loads(text)))
    except (ValueError, RecursionError):
        lines = text.replace("\n", "\r").split("\r")
        segment_ids = {line[:3] for line in lines if _SEGMENT_ID.match(line[:3])}
        leaves = {piece for piece in _HL7_SPLIT.split(text) if piece not in segment_ids}
    found = set()
    for leaf in leaves:
        leaf = leaf.strip()
        if len(leaf) >= MIN_VALUE_LENGTH:
            found.add(leaf)
            found.update(w for w in re.split(r"\s+", leaf) if len(w) >= MIN_VALUE_LENGTH)
    return found


def value_free_reason(reason: str, payload: bytes) -> str:
    """`reason` with every quoted part and every payload value withheld (longest values first)."""
    cleaned = _QUOTED.sub(WITHHELD, reason)
    for value in sorted(payload_values(payload), key=len, reverse=True):
        if value in cleaned and value not in WITHHELD:
            cleaned = cleaned.replace(value, WITHHELD)
    return cleaned
