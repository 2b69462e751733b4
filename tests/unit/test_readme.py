"""The README is part of the product: its example message and configuration table stay true."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from app.consumers.hl7v2_decode import DecodeOptions, decode_adt
from app.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_example_message_is_an_inpatient_discharge_with_its_times() -> None:
    segments = re.findall(r"^  '((?:MSH|EVN|PID|PV1)\|.*)'", README, flags=re.MULTILINE)
    assert [s[:3] for s in segments] == ["MSH", "EVN", "PID", "PV1"]
    msg = decode_adt("\r".join(s.replace("\\\\", "\\") for s in segments), DecodeOptions(default_zone=ZoneInfo("UTC")))
    assert (msg.message_type, msg.class_code, msg.visit_number) == ("ADT^A03", "IMP", "V0001")
    assert msg.hospital_service == "MED" and msg.discharge_disposition == "01"
    assert msg.admit_time == datetime(2026, 11, 15, 13, 30, tzinfo=UTC)
    assert msg.discharge_time == datetime(2026, 11, 20, 19, 0, tzinfo=UTC)
    assert '"due_at":"2026-11-27T19:00:00Z"' in README


def test_configuration_table_lists_every_setting() -> None:
    documented = set(re.findall(r"^\| `(CARECOORD_[A-Z0-9_]+)`", README, flags=re.MULTILINE))
    expected = set()
    for name, field in Settings.model_fields.items():
        if name in ("topics", "measures"):  # nested models: one row per sub-setting
            expected |= {f"CARECOORD_{name.upper()}__{sub.upper()}" for sub in field.annotation.model_fields}  # type: ignore[union-attr]
        else:
            expected.add(f"CARECOORD_{name.upper()}")
    assert documented == expected
