"""Worklist paging: sort orders and the opaque keyset cursor (pure: no I/O, no SQL).

A cursor names the sort it was issued for and the sort key of the last row returned; the next page
starts strictly after that key. Keyset paging (not OFFSET) keeps every page one index range scan,
however deep the caller pages, and never skips or repeats a row when tasks are added meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from app.api.request_body import decode_cursor
from app.tasks.lifecycle import PRIORITIES


class SortKey(StrEnum):
    DUE = "due"  # due_at, id: the default; served by the open-task indexes
    PRIORITY = "priority"  # FHIR request-priority rank, then due_at, id
    CREATED = "created"  # created_at, id
    UPDATED = "updated"  # updated_at, id (FHIR _lastUpdated)


class Order(StrEnum):
    ASC = "asc"
    DESC = "desc"


def priority_rank(priority: str) -> int:
    """routine 0 < urgent 1 < asap 2 < stat 3; an unknown value ranks as routine."""
    return PRIORITIES.index(priority) if priority in PRIORITIES else 0


class CursorError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Cursor:
    sort: SortKey
    order: Order
    key: tuple[Any, ...]  # the last row's sort key: ints, aware datetimes and a UUID last

    def encode(self) -> str:
        values = [v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v for v in self.key[:-1]]
        raw = json.dumps({"s": self.sort.value, "o": self.order.value, "k": values, "id": str(self.key[-1])})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = decode_cursor(text)
            sort, order = SortKey(raw["s"]), Order(raw["o"])
            values = list(raw["k"])
            expected = [int] * (sort is SortKey.PRIORITY) + [datetime]
            if len(values) != len(expected):
                raise ValueError("wrong key length")
            key: list[Any] = []
            for kind, value in zip(expected, values, strict=True):
                if kind is int:
                    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < len(PRIORITIES):
                        raise ValueError("rank")  # a forged huge int would overflow the database's integer
                    key.append(value)
                else:
                    stamp = datetime.fromisoformat(value)
                    if stamp.tzinfo is None:
                        raise ValueError("naive")
                    key.append(stamp)
            key.append(uuid.UUID(raw["id"]))
            return cls(sort, order, tuple(key))
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError, json.JSONDecodeError):
            raise CursorError("not a cursor this server issued") from None


def sort_key_of(
    sort: SortKey, *, task_id: uuid.UUID, priority: str, due_at: datetime, created_at: datetime, updated_at: datetime
) -> tuple[Any, ...]:
    """The sort key of one row, as a cursor carries it."""
    match sort:
        case SortKey.DUE:
            return (due_at, task_id)
        case SortKey.PRIORITY:
            return (priority_rank(priority), due_at, task_id)
        case SortKey.CREATED:
            return (created_at, task_id)
        case SortKey.UPDATED:
            return (updated_at, task_id)
    raise AssertionError(sort)  # pragma: no cover
