"""Does a raw inbound message (a dead letter) carry 42 CFR Part 2 data? Decides whether an admin
without the Part 2 permission may read its payload.

Part 2 when any encounter in it classifies as Part 2 (app/encounters/sensitivity.py) or any clinical
resource carries a substance-use instrument's LOINC code. A payload that cannot be decoded cannot be
classified either, so it counts as Part 2 (fail closed): its bytes could be anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from app.consumers.fhir_decode import EncounterItem, FhirMessage, ObservationItem
from app.encounters.notice import EncounterNotice
from app.encounters.sensitivity import SensitivityPolicy, classify


def _notice_is_part2(notice: EncounterNotice, policy: SensitivityPolicy) -> bool:
    return classify(
        policy, hospital_service=notice.hospital_service, location=notice.location, diagnoses=notice.diagnoses
    ).part2


def message_is_part2(message: Any, policy: SensitivityPolicy, part2_codes: frozenset[str]) -> bool:
    if isinstance(message, EncounterNotice):
        return _notice_is_part2(message, policy)
    if isinstance(message, FhirMessage):
        for item in message.items:
            if isinstance(item, EncounterItem) and _notice_is_part2(item.notice, policy):
                return True
            if isinstance(item, ObservationItem) and item.code in part2_codes:
                return True
            text = json.dumps(item.content)  # a QuestionnaireResponse or form: coded items anywhere
            if any(f'"{code}"' in text for code in part2_codes):
                return True
        return False
    return True  # a message kind this module does not know: fail closed


def payload_is_part2(
    decode: Callable[[bytes], Any] | None, payload: bytes, policy: SensitivityPolicy, part2_codes: frozenset[str]
) -> bool:
    if decode is None:
        return True
    try:
        message = decode(payload)
    except Exception:  # a dead letter is by definition input the decoder may choke on
        return True
    return message_is_part2(message, policy, part2_codes)
