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

from sqlalchemy import ColumnElement, Select, Subquery, select, union_all


def ordered_union(
    key_column: ColumnElement[Any],
    sort_columns: Sequence[ColumnElement[Any]],
    descending: bool,
    common: Sequence[ColumnElement[bool]],
    branches: Sequence[ColumnElement[bool]],
    limit: int,
) -> Subquery:
    """A subquery of (key, sort_0, sort_1, ...) holding the first `limit` rows of `common AND (any
    branch)` in sort order. The branches must not overlap (a row matching two would appear twice)."""
    labelled = [c.label(f"sort_{i}") for i, c in enumerate(sort_columns)]
    ordering = [c.desc() if descending else c.asc() for c in sort_columns]
    parts: list[Select[Any]] = []
    for branch in branches:
        inner = select(key_column.label("key"), *labelled).where(*common, branch).order_by(*ordering).limit(limit)
        # SQLite allows ORDER BY/LIMIT only on the whole compound select: wrap each branch.
        sub = inner.subquery()
        parts.append(select(*sub.c))
    merged = union_all(*parts).subquery("branches") if len(parts) > 1 else parts[0].subquery("branches")
    sort_refs = [merged.c[f"sort_{i}"] for i in range(len(sort_columns))]
    outer_order = [c.desc() if descending else c.asc() for c in sort_refs]
    return select(*merged.c).order_by(*outer_order).limit(limit).subquery("first_rows")
