"""Worklist API benchmark: 1,000,000 tasks in PostgreSQL, 50 concurrent facilitators.

1. Loads a realistic task mix (binary COPY): ~85 % closed history (completed, cancelled, failed) and
   ~15 % open work spread over 40 practices (teams) and the five facilitator roles, due times from a year
   ago to a month ahead, a quarter of the open tasks claimed by someone. Then ANALYZE, as autovacuum
   would on a live system. `--reuse` keeps a database already loaded with the same counts.
2. Serves the API as production would scale it: `carecoord serve --workers N` with the consumers off
   (CARECOORD_RUN_CONSUMERS=false) and a real broker (Tansu) for the producer.
3. Drives it with wrk (Debian package `wrk`) from a second process: --connections concurrent clients,
   each request a different facilitator's worklist page (role x team tokens, some with filters).
   Reports requests/s, latency percentiles and non-2xx responses.

Usage (documented in docs/benchmarks.md):
  .venv/bin/python bench/api.py --tasks 1000000 \
      --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/carecoord_bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from alembic.script import ScriptDirectory
from rich.console import Console
from rich.progress import Progress
from sqlalchemy import func, make_url, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.api.auth import mint_token
from app.db.bulk import insert_rows
from app.db.migrate import alembic_config, recreate_schema
from app.db.models import Patient, Task
from app.db.session import create_engine, session_factory
from app.messaging.embedded_broker import EmbeddedBroker
from app.settings import Settings

console = Console(stderr=True)
ROOT = Path(__file__).resolve().parents[1]

ROLES = ("PMC", "BHCF", "PCF", "RN", "PHARMD")
# task type -> (role, share of all tasks)
TYPES = (
    ("post-discharge-contact", "PMC", 0.34),
    ("medication-reconciliation", "RN", 0.24),
    ("post-ed-contact", "PMC", 0.14),
    ("fuh-follow-up", "BHCF", 0.05),
    ("bh-referral", "BHCF", 0.06),
    ("new-member-outreach", "PCF", 0.12),
    ("admission-notification", "PMC", 0.05),
)
CLOSED = (("completed", 0.70), ("cancelled", 0.11), ("failed", 0.04))
OPEN = (("ready", 0.10), ("in-progress", 0.04), ("requested", 0.01))
PRIORITIES = ("routine", "urgent", "asap")
CHUNK = 50_000
JWT_SECRET = "bench-only-" + "k" * 40  # a throwaway key for a local benchmark


@dataclass(frozen=True)
class Load:
    tasks: int
    patients: int
    teams: int
    seed: int


def teams(n: int) -> list[str]:
    return [f"PRACTICE-{i:03d}" for i in range(n)]


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def task_rows(load: Load, patient_ids: list[uuid.UUID], start: int, count: int, now: datetime) -> list[dict[str, Any]]:
    rng = random.Random(load.seed * 1_000_003 + start)
    team_names = teams(load.teams)
    statuses = (*CLOSED, *OPEN)
    rows = []
    for n in range(start, start + count):
        task_type, role, _ = rng.choices(TYPES, weights=[t[2] for t in TYPES])[0]
        if task_type == "medication-reconciliation" and rng.random() < 0.2:
            role = "PHARMD"
        status = _pick(rng, statuses)
        open_ = status in ("ready", "in-progress", "requested")
        due = (
            now + timedelta(minutes=rng.randint(-60 * 24 * 14, 60 * 24 * 30))
            if open_
            else now - timedelta(minutes=rng.randint(60, 60 * 24 * 365))
        )
        created = due - timedelta(days=7)
        rows.append(
            {
                "id": uuid.UUID(int=rng.getrandbits(128), version=4),
                "dedupe_key": f"bench:{n}",
                "type": task_type,
                "status": status,
                "priority": rng.choices(PRIORITIES, weights=(0.85, 0.12, 0.03))[0],
                "role": role,
                "team": None if rng.random() < 0.02 else rng.choice(team_names),
                "owner": f"user-{rng.randrange(400)}" if status == "in-progress" or rng.random() < 0.1 else None,
                "patient_id": rng.choice(patient_ids),
                "encounter_id": None,
                "due_at": due,
                "due_basis": {"policy": "calendar", "anchor": "discharge", "days": 7},
                "route_basis": {"population": "adult", "role": role},
                "failed_attempts": rng.choice((0, 0, 0, 1, 2)),
                "escalated_at": due if open_ and due < now and rng.random() < 0.5 else None,
                "superseded_by_encounter_id": None,
                "rule_id": task_type,
                "rule_version": "1",
                "triggering_event_ids": [str(uuid.UUID(int=rng.getrandbits(128), version=4))],
                "version": 1,
                "created_at": created,
                "updated_at": created,
            }
        )
    return rows


async def loaded_counts(engine: AsyncEngine) -> tuple[int, int] | None:
    """(tasks, patients) of a database loaded at the current schema; None otherwise."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    try:
        async with engine.connect() as conn:
            if (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar() != head:
                return None
            tasks = (await conn.execute(select(func.count()).select_from(Task))).scalar_one()
            patients = (await conn.execute(select(func.count()).select_from(Patient))).scalar_one()
    except Exception:  # no schema yet
        return None
    return tasks, patients


async def load_data(engine: AsyncEngine, load: Load) -> float:
    started = time.perf_counter()
    await recreate_schema(engine)
    sessions = session_factory(engine)
    rng = random.Random(load.seed)
    now = datetime.now(UTC)
    patient_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(load.patients)]
    with Progress(console=console) as progress:
        p = progress.add_task("patients", total=load.patients)
        for start in range(0, load.patients, CHUNK):
            ids = patient_ids[start : start + CHUNK]
            rows = [
                {
                    "id": pid,
                    "family_name": f"FAMILY{i}",
                    "given_name": f"GIVEN{i}",
                    "birth_date": date(1940, 1, 1) + timedelta(days=rng.randrange(80 * 365)),
                    "sex": rng.choice(("F", "M")),
                    "deceased": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for i, pid in enumerate(ids, start)
            ]
            async with sessions() as session, session.begin():
                await insert_rows(session, Patient.__table__, rows)
            progress.advance(p, len(rows))
        t = progress.add_task("tasks", total=load.tasks)
        for start in range(0, load.tasks, CHUNK):
            rows = task_rows(load, patient_ids, start, min(CHUNK, load.tasks - start), now)
            async with sessions() as session, session.begin():
                await insert_rows(session, Task.__table__, rows)
            progress.advance(t, len(rows))
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_settings(args: argparse.Namespace, bootstrap: str, var_dir: Path) -> dict[str, str]:
    return {
        "CARECOORD_DATABASE_URL": args.database_url,
        "CARECOORD_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CARECOORD_RUN_CONSUMERS": "false",
        "CARECOORD_JWT_SECRET": JWT_SECRET,
        "CARECOORD_VAR_DIR": str(var_dir),
        "CARECOORD_LOG_LEVEL": "WARNING",
        "CARECOORD_AUTO_MIGRATE": "false",
        "CARECOORD_ESCALATION_INTERVAL_S": "0",
    }


def requests_for(args: argparse.Namespace, settings: Settings) -> list[tuple[str, str]]:
    """(path, token) pairs: each facilitator (role x team) asks for their own worklist page; one in
    five adds a filter (overdue, due soon, a task type)."""
    rng = random.Random(args.seed)
    pairs = []
    for i in range(args.users):
        role = ROLES[i % len(ROLES)]
        team = teams(args.teams)[i % args.teams]
        token = mint_token(settings, f"bench-user-{i}", [role], [team], 6 * 3600)
        extra = rng.choice(("", "", "", "", "&overdue=true", "&due_soon=true", "&type=post-discharge-contact"))
        path = args.path.format(role=role) + f"{'&' if '?' in args.path else '?'}limit={args.page}{extra}"
        pairs.append((path, token))
    return pairs


LUA = """
local pairs_ = {PAIRS}
local i = 0
request = function()
  i = i + 1
  local p = pairs_[(i % #pairs_) + 1]
  return wrk.format("GET", p[1], {["Authorization"] = "Bearer " .. p[2]})
end
"""


def lua_script(pairs: list[tuple[str, str]]) -> str:
    body = ",\n".join(f"{{{json.dumps(path)}, {json.dumps(token)}}}" for path, token in pairs)
    return LUA.replace("{PAIRS}", "{" + body + "}")


def parse_wrk(output: str) -> dict[str, Any]:
    def ms(value: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    found = {f"p{p}_ms": ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M)}
    found["requests_per_s"] = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    found["requests"] = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    found["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    errors = re.search(r"Socket errors: (.*)", output)
    found["socket_errors"] = errors.group(1) if errors else None
    return found


def process_tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of `root` and its descendants (the uvicorn workers), from /proc: the
    load-independent cost of the requests, unlike throughput on a shared 2-core machine."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += (int(stats[pid][11]) + int(stats[pid][12])) / ticks
        todo.extend(children.get(pid, []))
    return total


def database_cpu_s(database: str) -> dict[int, float]:
    """CPU seconds per PostgreSQL backend serving `database`, and of the WAL writer (local server only):
    the database's share of a request, which the 2 cores also pay."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if title.startswith("postgres: ") and (f" {database} " in title or "walwriter" in title):
            found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return found


async def run_wrk(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec("wrk", "--timeout", "5s", *args, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}")
    return out.decode()


async def wait_ready(base: str, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError("the API exited during startup")
            try:
                if (await client.get(f"{base}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError("the API did not become ready in 60 s")


async def check_sample(base: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """One request per facilitator before the run: all must be 200 and return work, or the numbers mean
    nothing (an empty or forbidden page is cheap)."""
    sizes = []
    async with httpx.AsyncClient(base_url=base) as client:
        for path, token in pairs:
            resp = await client.get(path, headers={"Authorization": f"Bearer {token}"})
            if resp.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {resp.status_code} {resp.text[:300]}")
            sizes.append(len(resp.json()["items"]))
    return {"mean_items_per_page": sum(sizes) / len(sizes), "empty_pages": sizes.count(0)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/carecoord_bench")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=200_000)
    parser.add_argument("--teams", type=int, default=40)
    parser.add_argument("--users", type=int, default=200, help="distinct facilitator tokens (role x team)")
    parser.add_argument("--path", default="/tasks?role={role}", help="worklist path template")
    parser.add_argument("--page", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=int, default=30, help="seconds of load")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="keep an already loaded database")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is required: apt-get install wrk")
    if not args.database_url.startswith("postgresql"):
        sys.exit("the API benchmark targets PostgreSQL")

    load = Load(args.tasks, args.patients, args.teams, args.seed)
    database = make_url(args.database_url).database or ""
    engine = create_engine(args.database_url)
    result: dict[str, Any] = {"tasks": args.tasks, "patients": args.patients, "teams": args.teams}
    if args.reuse and await loaded_counts(engine) == (args.tasks, args.patients):
        result["load_s"] = None
    else:
        result["load_s"] = round(await load_data(engine, load), 1)
    await engine.dispose()

    with tempfile.TemporaryDirectory(prefix="carecoord-bench-api-") as tmp:
        broker = EmbeddedBroker(log_file=Path(tmp) / "broker.log")
        await broker.start()
        port = free_port()
        env = {**os.environ, **bench_settings(args, broker.bootstrap_servers, Path(tmp))}
        settings = Settings(jwt_secret=JWT_SECRET, var_dir=Path(tmp))
        log = (Path(tmp) / "api.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            str(ROOT / ".venv/bin/carecoord"),
            *("serve", "--workers", str(args.workers), "--port", str(port)),
            env=env,
            cwd=tmp,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_ready(base, proc)
            pairs = requests_for(args, settings)
            result["sample"] = await check_sample(base, pairs)
            script = Path(tmp) / "worklist.lua"
            script.write_text(lua_script(pairs), encoding="utf-8")
            wrk = ("-t", str(args.threads), "-c", str(args.connections), "-s", str(script), "--latency")
            await run_wrk(*wrk, "-d", f"{args.warmup}s", base)
            cpu_before, db_before = process_tree_cpu_s(proc.pid), database_cpu_s(database)
            output = await run_wrk(*wrk, "-d", f"{args.duration}s", base)
            cpu_s = process_tree_cpu_s(proc.pid) - cpu_before
            db_s = sum(cpu - db_before.get(pid, 0.0) for pid, cpu in database_cpu_s(database).items())
            console.print(output)
            result["load"] = parse_wrk(output)
            requests = max(result["load"]["requests"], 1)
            result["load"]["api_cpu_ms_per_request"] = round(1000 * cpu_s / requests, 2)
            result["load"]["database_cpu_ms_per_request"] = round(1000 * db_s / requests, 2)
        finally:
            proc.terminate()
            await proc.wait()
            log.close()
            await broker.stop()
    result.update(
        connections=args.connections,
        workers=args.workers,
        duration_s=args.duration,
        path=args.path,
        page=args.page,
        load_avg_1m=os.getloadavg()[0],
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
