from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import hl7.util
import pytest

from app.logging_config import configure_logging


@pytest.fixture
def json_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("DEBUG")
    yield
    root.handlers[:], root.level = saved[0], saved[1]


def test_python_hl7_records_never_reach_the_log(json_logging: None) -> None:
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    # python-hl7 logs the raw field (patient data) when it meets a malformed hex escape.
    hl7.util.unescape(hl7.parse("MSH|^~\\&|A|F|||20260101||ADT^A01|1|P|2.5.1\rPID|1||1||DOE\\X4G\\"), "DOE\\X4G\\")
    logging.getLogger("app.test").info("event applied", extra={"event_id": "e-1"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["event applied"]
    assert "DOE" not in stream.getvalue()
