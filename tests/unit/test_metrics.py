"""Metrics labels stay bounded and free of identifiers; the exposition is Prometheus text, and
multiprocess mode aggregates the workers' values."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from app import metrics
from app.metrics import EVENTS_APPLIED, render, sample, type_label


def test_type_labels_are_shaped_and_bounded() -> None:
    assert type_label("ADT^A03") == "ADT^A03"
    assert type_label(None) == "unknown"
    assert type_label("DOE^JANE 1970-04-12") == metrics.OTHER  # a space: not a type a feed sends
    assert type_label("x" * 41) == metrics.OTHER
    for i in range(200):
        type_label(f"T{i}")
    assert len(metrics._seen_types) <= metrics._MAX_TYPES
    assert type_label("never-seen-before") == metrics.OTHER


def test_render_is_prometheus_text_with_the_documented_names() -> None:
    EVENTS_APPLIED.labels("adt-test", "ADT^A03").inc(2)
    body, content_type = render()
    text = body.decode()
    assert content_type.startswith("text/plain; version=")
    assert 'carecoord_events_applied_total{topic="adt-test",type="ADT^A03"} 2.0' in text
    for name in (
        "carecoord_events_consumed_total",
        "carecoord_events_rejected_total",
        "carecoord_event_processing_seconds",
        "carecoord_consumer_lag",
        "carecoord_tasks_created_total",
        "carecoord_tasks_completed_total",
        "carecoord_tasks_overdue",
        "carecoord_http_request_duration_seconds",
        "carecoord_roster_imports_total",
    ):
        assert f"# TYPE {name} " in text, name
    assert sample("carecoord_events_applied_total", topic="adt-test", type="ADT^A03") == 2


def test_multiprocess_mode_sums_every_worker(tmp_path: Path) -> None:
    """What `serve --workers N` relies on: two processes write, a third renders both."""
    worker = textwrap.dedent(
        """
        from app.metrics import EVENTS_APPLIED
        EVENTS_APPLIED.labels("adt", "ADT^A01").inc(3)
        """
    )
    reader = "from app.metrics import render; print(render()[0].decode())"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60)
    out = subprocess.run(
        [sys.executable, "-c", reader], env=env, check=True, timeout=60, capture_output=True, text=True
    )
    assert 'carecoord_events_applied_total{topic="adt",type="ADT^A01"} 6.0' in out.stdout
