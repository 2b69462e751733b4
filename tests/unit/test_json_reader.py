"""JSON columns are read with pydantic-core (app/db/session.read_json), falling back to the standard
library for text that only it accepts, so rows stored before keep reading."""

from __future__ import annotations

import json

from app.db.session import read_json


def test_reads_what_json_loads_reads() -> None:
    text = '{"a": [1, 2.5, null, true], "b": {"c": "d\\u00e9"}, "big": 12345678901234567890}'
    assert read_json(text) == json.loads(text)


def test_a_lone_surrogate_escape_still_reads() -> None:
    text = '{"note": "\\ud800"}'
    assert read_json(text) == json.loads(text) == {"note": "\ud800"}
