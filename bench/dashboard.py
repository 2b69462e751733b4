"""Dashboard benchmark: every quality measure (app/measures) over 1,000,000 tasks in PostgreSQL, for a
supervisor and for a facilitator, in server time.

1. Loads bench/dataset.py's task mix (shared with bench/api.py) enriched with what the measures read:
   the hospital stay each transition-of-care task hangs on (a few percent Part 2), the completion
   history of completed tasks (some completed by an evidence visit), a roster member per patient and
   screenings for a third of them. `--reuse` keeps a database already loaded with the same counts.
2. Times `compute_measures` (all measures: the dashboard's server work) for each caller, `--repeat`
   times after one warm-up, in a fresh session each (connection checkout included), and reports the
   median, min and max.
3. Runs EXPLAIN (ANALYZE, BUFFERS) on each SQL statement one computation issues, for the planner's own
   execution times (less sensitive to a busy machine than wall time).

Usage (documented in docs/benchmarks.md):
  createdb -h 127.0.0.1 -U postgres cc_measures_bench
  .venv/bin/python bench/dashboard.py --tasks 1000000 \\
      --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/cc_measures_bench
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.api.auth import Principal
from app.db.models import Encounter, FhirResource, RosterImport, RosterMember, ScreeningEvent, TaskHistory
from app.db.session import create_engine, session_factory
from app.measures.filters import MeasureFilter
from app.measures.service import MeasureContext, compute_measures
from app.settings import Settings
from bench.dataset import Load, Rows, console, load_data, loaded_counts, teams

# Task type -> how long after the discharge its window runs (the stay's discharge is due_at - this).
DISCHARGE_WINDOWS = {
    "post-discharge-contact": timedelta(days=7),
    "medication-reconciliation": timedelta(hours=72),
    "post-ed-contact": timedelta(days=7),
    "fuh-follow-up": timedelta(days=7),
}
VISIT_COMPLETES = ("post-discharge-contact", "post-ed-contact", "fuh-follow-up")
PART2_SHARE = 0.03
SCREENED_SHARE = 0.33


class DashboardData:
    """The rows the measures read besides tasks (bench/dataset.Enrichment)."""

    def __init__(self, n_teams: int) -> None:
        self.team_names = teams(n_teams)
        self.import_id: uuid.UUID | None = None

    def for_patients(self, patient_ids: Sequence[uuid.UUID], rng: random.Random, now: datetime) -> Rows:
        rows: Rows = []
        if self.import_id is None:
            self.import_id = uuid.uuid4()
            rows.append(
                (
                    RosterImport.__table__,
                    [
                        {
                            "id": self.import_id,
                            "sender": "ACO",
                            "format": "csv",
                            "mapping": "default",
                            "filename": "bench.csv",
                            "checksum": "0" * 64,
                            "source": "cli",
                            "status": "completed",
                            "as_of": now.date() - timedelta(days=400),
                            "received_at": now,
                            "finished_at": now,
                        }
                    ],
                )
            )
        members, resources, screenings = [], [], []
        for pid in patient_ids:
            terminated = rng.random() < 0.05
            members.append(
                {
                    "sender": "ACO",
                    "member_id": pid.hex[:20],
                    "patient_id": pid,
                    "status": "terminated" if terminated else "active",
                    "row_hash": pid.hex,
                    "identifier_system": "urn:bench:mrn",
                    "identifier_value": pid.hex,
                    "practice": rng.choice(self.team_names),
                    "bh_program": rng.random() < 0.1,
                    "enrollment_start": date(2025, 1, 1),
                    "enrollment_end": now.date() - timedelta(days=rng.randrange(400)) if terminated else None,
                    "last_import_id": self.import_id,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            if rng.random() < SCREENED_SHARE:
                effective = now - timedelta(minutes=rng.randrange(60 * 24 * 365))
                instrument, code = ("AUDIT-C", "75626-2") if rng.random() < 0.05 else ("PHQ-9", "44261-6")
                score = rng.randrange(0, 20)
                resource_id = uuid.uuid4()
                resources.append(
                    {
                        "id": resource_id,
                        "resource_type": "Observation",
                        "identity_hash": hashlib.sha256(resource_id.bytes).hexdigest(),
                        "patient_id": pid,
                        "status": "final",
                        "code": code,
                        "effective_at": effective,
                        "content": {"resourceType": "Observation"},
                        "content_hash": resource_id.hex * 2,
                        "version": 1,
                        "created_at": effective,
                        "updated_at": effective,
                    }
                )
                screenings.append(
                    {
                        "patient_id": pid,
                        "instrument": instrument,
                        "score": score,
                        "item9_score": None,
                        "positive": score >= 10,
                        "threshold": 10,
                        "score_computed": False,
                        "effective_at": effective,
                        "status": "active",
                        "source_type": "Observation",
                        "source_id": resource_id,
                        "source_version": 1,
                        "recorded_at": effective,
                        "updated_at": effective,
                    }
                )
        rows += [(RosterMember.__table__, members), (FhirResource.__table__, resources)]
        rows.append((ScreeningEvent.__table__, screenings))
        return rows

    def for_tasks(self, tasks: list[dict[str, Any]], rng: random.Random, now: datetime) -> tuple[Rows, Rows]:
        stays: list[dict[str, Any]] = []
        visits: list[dict[str, Any]] = []
        history: list[dict[str, Any]] = []
        for task in tasks:
            kind = task["type"]
            done_at: datetime | None = None
            if kind in DISCHARGE_WINDOWS:
                window = DISCHARGE_WINDOWS[kind]
                discharge = task["due_at"] - window
                part2 = rng.random() < PART2_SHARE
                stays.append(self._stay(task, discharge - timedelta(days=3), discharge, part2))
                task["part2"] = part2
                # Raised when the A03 is applied: minutes to hours after the discharge, a late feed days after.
                late = timedelta(days=rng.randrange(1, 10)) if rng.random() < 0.02 else timedelta(0)
                task["created_at"] = task["updated_at"] = discharge + late + timedelta(minutes=rng.randrange(240))
                if task["status"] == "completed":
                    done_at = discharge + window * rng.uniform(0.05, 2.0)
                    if kind in VISIT_COMPLETES and rng.random() < 0.3:
                        visit = self._stay(task, done_at, None, False, visit=True)
                        visits.append(visit)
                        task["completed_by_encounter_id"] = visit["id"]
            elif kind == "admission-notification":
                admit = task["created_at"] - timedelta(minutes=rng.randrange(60 * 48))
                stays.append(self._stay(task, admit, admit + timedelta(days=3), False))
                task["part2"] = False
            elif kind == "bh-referral" and task["status"] == "completed":
                done_at = task["created_at"] + timedelta(minutes=rng.randrange(60 * 24 * 40))
            if task.get("part2") is None:
                task["part2"] = False
            if "completed_by_encounter_id" not in task:
                task["completed_by_encounter_id"] = None
            if done_at is not None:
                history.append(
                    {
                        "task_id": task["id"],
                        "at": min(done_at, now),
                        "actor": "bench",
                        "action": "completed",
                        "from_status": "in-progress",
                        "to_status": "completed",
                        "detail": {"reason": "bench"},
                    }
                )
        return [(Encounter.__table__, stays + visits)], [(TaskHistory.__table__, history)]

    @staticmethod
    def _stay(
        task: dict[str, Any], admit: datetime, discharge: datetime | None, part2: bool, *, visit: bool = False
    ) -> dict[str, Any]:
        encounter_id = uuid.uuid4()
        if not visit:
            task["encounter_id"] = encounter_id
        return {
            "id": encounter_id,
            "patient_id": task["patient_id"],
            "facility": "BENCH",
            "visit_number": encounter_id.hex,
            "status": "finished" if discharge else "in-progress",
            "class_code": "AMB" if visit else "IMP",
            "patient_class": "O" if visit else "I",
            "admit_at": admit,
            "discharge_at": discharge,
            "diagnoses": [],
            "behavioral_health": False,
            "part2": part2,
            "security_labels": [],
            "last_event_at": discharge or admit,
            "created_at": admit,
            "updated_at": discharge or admit,
        }


class StatementLog:
    """The SQL statements (and parameters) a computation issues, for EXPLAIN ANALYZE afterwards."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []
        self.on = False

    def __call__(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if self.on and statement.lstrip().upper().startswith("SELECT"):
            self.statements.append((statement, parameters))


def principals(n_teams: int) -> dict[str, Principal]:
    names = teams(n_teams)
    return {
        "supervisor (10 teams)": Principal("bench-sup", frozenset({"SUPERVISOR"}), frozenset(names[:10])),
        "supervisor (all teams, Part 2)": Principal(
            "bench-sup-all", frozenset({"SUPERVISOR", "PART2"}), frozenset(names)
        ),
        "facilitator (PMC, 1 team)": Principal("bench-pmc", frozenset({"PMC"}), frozenset(names[:1])),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/cc_measures_bench")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=200_000)
    parser.add_argument("--teams", type=int, default=40)
    parser.add_argument("--days", type=int, default=30, help="the dashboard period: this many days ending today")
    parser.add_argument("--repeat", type=int, default=9, help="timed computations per caller (after a warm-up)")
    parser.add_argument("--reuse", action="store_true", help="keep an already loaded database")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not args.database_url.startswith("postgresql"):
        sys.exit("the dashboard benchmark targets PostgreSQL")

    engine = create_engine(args.database_url)
    result: dict[str, Any] = {"tasks": args.tasks, "patients": args.patients, "teams": args.teams}
    async with engine.connect() as conn:
        loaded = await loaded_counts(engine)
        stays = 0
        if loaded is not None:
            stays = int((await conn.execute(select(func.count()).select_from(Encounter))).scalar_one())
    if args.reuse and loaded == (args.tasks, args.patients) and stays > 0:
        result["load_s"] = None
    else:
        result["load_s"] = round(await load_data(engine, Load(args.tasks, args.patients, args.teams, args.seed),
                                                 DashboardData(args.teams)), 1)  # fmt: skip
    async with engine.connect() as conn:
        for table in ("tasks", "encounters", "task_history", "roster_members", "screening_events"):
            result[f"rows_{table}"] = int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())  # noqa: S608

    settings = Settings(database_url=args.database_url)
    context = MeasureContext.from_settings(settings)
    today = datetime.now(UTC).astimezone(ZoneInfo(settings.facility_timezone)).date()
    flt = MeasureFilter(today - timedelta(days=args.days - 1), today)
    result["period"] = [flt.period_start.isoformat(), flt.period_end.isoformat()]
    sessions = session_factory(engine)
    log = StatementLog()
    event.listen(engine.sync_engine, "before_cursor_execute", log)
    result["callers"] = {}
    for label, principal in principals(args.teams).items():
        async with sessions() as session:  # warm-up (plans, caches), and the statements to explain
            log.statements.clear()
            log.on = True
            measures = await compute_measures(session, flt, principal, context=context)
            log.on = False
        timings = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            async with sessions() as session:
                await compute_measures(session, flt, principal, context=context)
            timings.append((time.perf_counter() - started) * 1000)
        explained = []
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SET jit = off")  # as the service does (app/measures/service.py)
            for statement, parameters in log.statements:
                plan = (
                    await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", parameters)
                ).scalar_one()
                plan = plan if isinstance(plan, list) else json.loads(plan)
                explained.append(
                    {
                        "sql": " ".join(statement.split())[:90],
                        "planning_ms": round(plan[0]["Planning Time"], 2),
                        "execution_ms": round(plan[0]["Execution Time"], 2),
                    }
                )
        result["callers"][label] = {
            "repetitions": args.repeat,
            "median_ms": round(statistics.median(timings), 1),
            "min_ms": round(min(timings), 1),
            "max_ms": round(max(timings), 1),
            "explain_analyze_total_ms": round(sum(e["planning_ms"] + e["execution_ms"] for e in explained), 1),
            "statements": explained,
            "numbers": {m.key: [m.numerator, m.denominator] for m in measures},
        }
        console.print(f"{label}: median {result['callers'][label]['median_ms']} ms")
    await engine.dispose()
    result["load_avg_1m"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
