"""Roster benchmark: a generated N-member file imported and reconciled against a previous N-member roster.

The previous roster is imported first (every member new: patients, identifiers, outreach tasks),
then the day's file, which differs by 2% adds, 2% terminations (absent members) and 5% changes
(half PCP/practice reassignments, half demographics). Both go through `RosterImporter`, the code
the CLI, API and inbox watcher run. Reported: wall time of each import, rows/s, the change counts
(asserted), and the process's peak RSS.

Usage (documented in docs/benchmarks.md):
  .venv/bin/python bench/roster.py --members 1000000 \
      --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/carecoord_bench
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.db.migrate import recreate_schema
from app.db.session import create_engine, session_factory
from app.ingest.roster_import import ImportOutcome, ImportRequest, RosterImporter
from app.roster.fields import npi_check_digit
from app.roster.records import DEFAULT_HEADER
from app.rules.config import load_rules
from app.rules.engine import RuleEngine
from app.settings import DEFAULT_RULES_FILE, Settings

console = Console(stderr=True)
ZONE = ZoneInfo("America/New_York")
NPIS = [f"1{n:08d}" + npi_check_digit(f"1{n:08d}") for n in range(500)]
ADD_SHARE, TERM_SHARE, CHANGE_SHARE = 0.02, 0.02, 0.05


def row(n: int, variant: int = 0) -> list[str]:
    """Member n; variant 1 reassigns the PCP and practice, variant 2 changes demographics."""
    pcp = NPIS[(n + (7 if variant == 1 else 0)) % len(NPIS)]
    return [
        f"M{n:09d}",
        "urn:hl7v2:aa:GOODHEALTH",
        f"MRN{n:09d}",
        f"Family{n % 5000}" + ("-Moved" if variant == 2 else ""),
        f"Given{n % 700}",
        f"{1930 + n % 90}-{1 + n % 12:02d}-{1 + n % 28:02d}",
        "FM"[n % 2],
        f"555-{n % 10000:04d}",
        f"{n % 999} {'Elm' if variant == 2 else 'Main'} St, Springfield, MA, 01{n % 1000:03d}",
        pcp,
        f"Practice {(n + (3 if variant == 1 else 0)) % 200}",
        "ACO" if n % 4 else "CP",
        "Y" if n % 9 == 0 else "N",
        "2025-01-01",
        "",
    ]


def generate(path: Path, members: int, *, today: bool) -> None:
    """Yesterday: members 0..N-1. Today: the first 2% absent, 5% changed, 2% new ids past N."""
    terms = int(members * TERM_SHARE) if today else 0
    changes = int(members * CHANGE_SHARE) if today else 0
    adds = int(members * ADD_SHARE) if today else 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(DEFAULT_HEADER)
        for n in range(terms, members):
            variant = 0
            if n < terms + changes:
                variant = 1 if n % 2 else 2
            writer.writerow(row(n, variant))
        for n in range(members, members + adds):
            writer.writerow(row(n))


async def timed_import(importer: RosterImporter, path: Path, as_of: date, members: int) -> tuple[float, ImportOutcome]:
    with Progress(
        TextColumn(f"[bold]{path.name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("import", total=members)
        started = time.perf_counter()
        outcome = await importer.run(
            ImportRequest(path=path, filename=path.name, as_of=as_of, source="bench"),
            progress=lambda n: progress.update(task, completed=n),
        )
        return time.perf_counter() - started, outcome


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--workdir", type=Path, default=None, help="where the generated files go (default: a temp dir)")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="roster-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    previous, current = workdir / "roster-day1.csv", workdir / "roster-day2.csv"
    with console.status("generating files"):
        generate(previous, args.members, today=False)
        generate(current, args.members, today=True)

    engine = create_engine(args.database_url)
    await recreate_schema(engine)
    settings = Settings(var_dir=workdir, database_url=args.database_url)
    importer = RosterImporter(settings, session_factory(engine), RuleEngine(load_rules(DEFAULT_RULES_FILE), ZONE), ZONE)
    try:
        first_s, first = await timed_import(importer, previous, date(2026, 11, 2), args.members)
        second_s, second = await timed_import(importer, current, date(2026, 11, 3), args.members)
    finally:
        await engine.dispose()

    n = args.members
    expected = (int(n * ADD_SHARE), int(n * TERM_SHARE), int(n * CHANGE_SHARE))
    assert first.status == "completed" and first.added == n, first
    assert second.status == "completed", second
    assert (second.added, second.terminated, second.changed) == expected, (second, expected)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "members": n,
        "database": args.database_url.split("://")[0],
        "initial_import_s": round(first_s, 1),
        "reconcile_import_s": round(second_s, 1),
        "reconcile_rows_per_s": round(second.total_rows / second_s),
        "added": second.added,
        "terminated": second.terminated,
        "changed": second.changed,
        "tasks_created": second.tasks_created,
        "tasks_cancelled": second.tasks_cancelled,
        "peak_rss_mb": round(peak_mb),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
