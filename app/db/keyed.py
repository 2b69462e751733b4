"""Fetch the rows matching a batch of keys with a plan that holds on any table statistics.

`key IN ($1 ... $500)` against a table PostgreSQL has not analyzed yet (a new deployment, a fresh
schema) is planned with the default per-value selectivity; 500 values add up to "every row" and
the planner scans the table, tens of milliseconds more per batch as it grows. Joining the keys as an
`unnest` of array parameters instead gives a nested loop of unique-index probes whatever the
statistics say. SQLite plans IN lists by index already.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, String, and_, bindparam, func
from sqlalchemy.dialects.postgresql import ARRAY


def restrict_to_keys(
    query: Select[Any], columns: Sequence[ColumnElement[str]], keys: Collection[tuple[str, ...]], dialect: str
) -> Select[Any]:
    """`query` limited to rows whose `columns` equal one of `keys`. Elsewhere than PostgreSQL a
    multi-column key becomes one IN list per column, which may match extra combinations: callers
    keep the exact keys."""
    if dialect == "postgresql":
        names = [f"k{i}" for i in range(len(columns))]
        arrays = [
            bindparam(name, [key[i] for key in keys], type_=ARRAY(String), unique=True) for i, name in enumerate(names)
        ]
        keyset = func.unnest(*arrays).table_valued(*names).render_derived(name="keyset")
        return query.join(
            keyset, and_(*(column == keyset.c[name] for column, name in zip(columns, names, strict=True)))
        )
    return query.where(*(column.in_({key[i] for key in keys}) for i, column in enumerate(columns)))
