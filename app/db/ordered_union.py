"""First rows of an OR of index ranges, in order: `WHERE (b1 OR b2 ...) ORDER BY k LIMIT n` as a UNION ALL
of `WHERE bi ORDER BY k LIMIT n`, merged and cut to n.

Why: a facilitator's worklist is "my roles x (my teams or no team), open, soonest due first". With an
index on (role, team, due_at) each branch is one ordered index range, so the database reads at most n
entries per branch. Written as one OR, PostgreSQL must fetch and sort every open task of the queue
(thousands of heap rows per page at a million tasks) before it can return the first 50.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, CompoundSelect, Select, Subquery, func, select, union_all


def _union(parts: Sequence[Select[Any]]) -> Select[Any] | CompoundSelect:
    # SQLite allows ORDER BY/LIMIT only on a whole compound select: each branch is wrapped.
    wrapped = [select(*part.subquery().c) for part in parts]
    return union_all(*wrapped) if len(wrapped) > 1 else wrapped[0]


def ordered_union(
    key_column: ColumnElement[Any],
    sort_columns: Sequence[ColumnElement[Any]],
    descending: bool,
    common: Sequence[ColumnElement[bool]],
    branches: Sequence[ColumnElement[bool]],
    limit: Any,  # an int or a bind parameter
) -> Subquery:
    """A subquery of (key, sort_0, sort_1, ...) holding the first `limit` rows of `common AND (any
    branch)` in sort order. The branches must not overlap (a row matching two would appear twice)."""
    labelled = [c.label(f"sort_{i}") for i, c in enumerate(sort_columns)]
    ordering = [c.desc() if descending else c.asc() for c in sort_columns]
    merged = _union(
        [
            select(key_column.label("key"), *labelled).where(*common, branch).order_by(*ordering).limit(limit)
            for branch in branches
        ]
    ).subquery("branches")
    sort_refs = [merged.c[f"sort_{i}"] for i in range(len(sort_columns))]
    outer_order = [c.desc() if descending else c.asc() for c in sort_refs]
    return select(*merged.c).order_by(*outer_order).limit(limit).subquery("first_rows")


def union_count(
    key_column: ColumnElement[Any],
    common: Sequence[ColumnElement[bool]],
    branches: Sequence[ColumnElement[bool]],
    cap: Any,  # an int, a bind parameter or None
) -> Select[tuple[int]]:
    """count(*) of `common AND (any branch)`, up to `cap` rows (None: all): one index range per branch
    instead of a filtered walk over the union of them, and the walk stops at `cap` rows in all."""
    parts = [select(key_column.label("key")).where(*common, branch) for branch in branches]
    merged = _union(parts)
    if cap is not None:
        merged = merged.limit(cap)
    return select(func.count()).select_from(merged.subquery("counted"))
