"""Prometheus metrics (prometheus_client), rendered at `GET /metrics`.

Labels carry only bounded, non-identifying values: topic, partition, message type, task type, role,
outcome, route template, status code, roster sender. Never a patient, an MRN, a path with an id, or a
free-text reason: a label value is stored and shipped to whoever reads the monitoring system.

Several processes: a `carecoord consume` or single-worker `serve` process exposes its own registry.
`serve --workers N` shares one port among N processes, so it runs prometheus_client's multiprocess
mode: the CLI points PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers start, each
worker writes its values there, and whichever worker answers the scrape aggregates all of them
(docs/operations.md, "Metrics").
"""

from __future__ import annotations

import os
import re
import threading

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# -- events (consumers) --------------------------------------------------------------------------
EVENTS_CONSUMED = Counter(
    "carecoord_events_consumed", "records taken from a topic and handled (any outcome)", ["topic", "type"]
)
EVENTS_APPLIED = Counter("carecoord_events_applied", "records applied to the database", ["topic", "type"])
EVENTS_DUPLICATE = Counter(
    "carecoord_events_duplicate", "records already applied before (redelivery or resend): no effect", ["topic", "type"]
)
EVENTS_NOT_ACTED_ON = Counter(
    "carecoord_events_not_acted_on",
    "records of an event type the service does not act on (A09, A14, A31, ...): recorded, no effect",
    ["topic", "type"],
)
EVENTS_REJECTED = Counter("carecoord_events_rejected", "records dead-lettered with a reason", ["topic", "type"])
DATA_QUALITY_FINDINGS = Counter(
    "carecoord_data_quality_findings",
    "applied input that looks wrong (a reused control id, a sender clock ahead), listed at /admin/data-quality;"
    " counted on commit",
    ["kind", "source"],
)
EVENT_LATENCY = Histogram(
    "carecoord_event_processing_seconds",
    "publish (Kafka record timestamp) to applied (database commit)",
    ["topic"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
CONSUMER_LAG = Gauge(
    "carecoord_consumer_lag",
    "records on the partition not yet applied by this group (high-water mark - position)",
    ["topic", "partition"],
    multiprocess_mode="livemax",
)

# -- tasks -----------------------------------------------------------------------------------------
TASKS_CREATED = Counter("carecoord_tasks_created", "tasks created (counted on commit)", ["type", "role"])
TASKS_COMPLETED = Counter("carecoord_tasks_completed", "tasks completed (counted on commit)", ["type", "role"])
TASKS_ESCALATED = Counter(
    "carecoord_tasks_escalated", "tasks escalated once for being past due (counted on commit)", ["type", "role"]
)
TASKS_OVERDUE = Gauge(
    "carecoord_tasks_overdue",
    "open tasks past their due time, as of the last escalation pass (same value in every consumer process)",
    ["type", "role"],
    multiprocess_mode="livemax",
)

# -- HTTP ------------------------------------------------------------------------------------------
HTTP_LATENCY = Histogram(
    "carecoord_http_request_duration_seconds",
    "HTTP request latency by route template (never the raw path), method and status",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# -- outbox relay (issue 9) -------------------------------------------------------------------------
OUTBOX_PUBLISHED = Counter("carecoord_outbox_published", "task changes published from the outbox")
OUTBOX_RELAY_FAILURES = Counter("carecoord_outbox_relay_failures", "outbox relay passes that failed")
OUTBOX_OLDEST_UNPUBLISHED = Gauge(
    "carecoord_outbox_oldest_unpublished_seconds",
    "age of the oldest change the relay found unpublished in its last pass",
    multiprocess_mode="livemax",
)

# -- rosters and inbox (issue 7) ---------------------------------------------------------------------
ROSTER_IMPORTS = Counter("carecoord_roster_imports", "roster files processed", ["status"])
ROSTER_CHANGES = Counter("carecoord_roster_changes", "members changed", ["kind"])
INBOX_FILES_REJECTED = Counter("carecoord_inbox_files_rejected", "inbox files refused")
INBOX_MISSING_FILES = Counter("carecoord_inbox_missing_files", "expected files not received", ["sender"])
INBOX_FILE_MISSING = Gauge(
    "carecoord_inbox_file_missing",
    "1 while an expected daily file is past its cutoff",
    ["sender"],
    multiprocess_mode="livemax",
)

# -- MLLP listener (issue 19) ------------------------------------------------------------------------
MLLP_CONNECTIONS_CLOSED = Counter(
    "carecoord_mllp_connections_closed",
    "MLLP connections closed by the listener, by reason (idle, frame_timeout, evicted, refused)",
    ["reason"],
)

OTHER = "other"
_LABEL_SHAPE = re.compile(r"^[A-Za-z0-9^_.:/-]{1,40}$")
_MAX_TYPES = 64
_seen_types: set[str] = set()
_types_lock = threading.Lock()


def type_label(value: str | None) -> str:
    """A message/resource type as a label: well-formed and bounded in number. The value comes from the
    sender's message, so a feed inventing types could otherwise grow the series without limit."""
    if not value:
        return "unknown"
    if value in _seen_types:  # the common case, without the lock (sets are safe to read concurrently)
        return value
    if not _LABEL_SHAPE.match(value):
        return OTHER
    with _types_lock:
        if value in _seen_types:
            return value
        if len(_seen_types) >= _MAX_TYPES:
            return OTHER
        _seen_types.add(value)
    return value


def show_overdue(counts: dict[tuple[str, str], int]) -> None:
    """Replace the overdue gauge's series: a (type, role) no longer overdue drops to absent, not stale."""
    TASKS_OVERDUE.clear()
    for (task_type, role), count in counts.items():
        TASKS_OVERDUE.labels(task_type, role).set(count)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def render() -> tuple[bytes, str]:
    """The exposition text and its content type; all workers' values in multiprocess mode."""
    if multiprocess_enabled():
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def sample(name: str, **labels: str) -> float | None:
    """This process's current value of a sample (tests, and logs that mirror a metric)."""
    return REGISTRY.get_sample_value(name, labels)
