"""A minimal in-process metrics registry (counters and gauges with labels), rendered in the
Prometheus text format at `GET /metrics`. Each process has its own; a long-running watcher
also logs what it counts, so nothing depends on scraping it."""

from __future__ import annotations

import threading
from collections import defaultdict

LabelSet = tuple[tuple[str, str], ...]


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[LabelSet, float]] = defaultdict(dict)
        self._gauges: dict[str, dict[LabelSet, float]] = defaultdict(dict)
        self._help: dict[str, str] = {}

    def inc(self, name: str, amount: float = 1, help: str = "", **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0) + amount
            self._help.setdefault(name, help)

    def set(self, name: str, value: float, help: str = "", **labels: str) -> None:
        with self._lock:
            self._gauges[name][tuple(sorted(labels.items()))] = value
            self._help.setdefault(name, help)

    def value(self, name: str, **labels: str) -> float | None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            for family in (self._counters, self._gauges):
                if key in family.get(name, {}):
                    return family[name][key]
        return None

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for kind, family in (("counter", self._counters), ("gauge", self._gauges)):
                for name in sorted(family):
                    if self._help.get(name):
                        lines.append(f"# HELP {name} {self._help[name]}")
                    lines.append(f"# TYPE {name} {kind}")
                    for labels, value in sorted(family[name].items()):
                        rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                        lines.append(f"{name}{{{rendered}}} {value:g}" if rendered else f"{name} {value:g}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


METRICS = Registry()
