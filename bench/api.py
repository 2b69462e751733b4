"""Worklist API benchmark: 1,000,000 tasks in PostgreSQL, 50 concurrent facilitators.

1. Loads a realistic task mix (binary COPY): ~85 % closed history (completed, cancelled, failed) and
   ~15 % open work spread over 40 practices (teams) and the five facilitator roles, due times from a year
   ago to a month ahead, a quarter of the open tasks claimed by someone. Then ANALYZE, as autovacuum
   would on a live system. `--reuse` keeps a database already loaded with the same counts.
2. Serves the API as production would scale it: `carecoord serve --workers N` with the consumers off
   (CARECOORD_RUN_CONSUMERS=false) and a real broker (Tansu) for the producer.
3. Drives it with wrk (Debian package `wrk`) from a second process: --connections concurrent clients,
   each request a different facilitator's worklist page (role x team tokens, some with filters), once
   per --rates entry: 0 is closed loop (every client sends its next request the moment the last one is
   answered: the capacity), N paces the clients to N requests/s in all (the issue's "500 requests/s
   under 50 concurrent clients"). Reports requests/s, latency percentiles, non-2xx responses, and for a
   paced run the sends that left more than 10 ms after their slot (then the server fell behind and the
   percentiles understate the wait).

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
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from sqlalchemy import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.api.auth import mint_token
from app.db.session import create_engine
from app.messaging.embedded_broker import EmbeddedBroker
from app.settings import Settings
from bench.dataset import ROLES, Load, load_data, loaded_counts, teams

console = Console(stderr=True)
ROOT = Path(__file__).resolve().parents[1]

JWT_SECRET = "bench-only-" + "k" * 40  # a throwaway key for a local benchmark


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

# Pacing (wrk calls `delay()` before each follow-up request of a connection): each wrk thread sends on a
# fixed schedule, one slot every INTERVAL ms, shared by its connections; a send later than its slot by
# more than LATE_MS is counted. LuaJIT's ffi reads the monotonic clock (Lua itself has none in ms).
PACED_LUA = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local next_at = nil
late = 0
delay = function()
  local now = now_ms()
  next_at = (next_at or now) + {INTERVAL}
  if next_at < now - {LATE_MS} then late = late + 1 end
  return math.max(0, next_at - now)
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("late") end
  io.write(string.format("Late sends: %d\\n", total))
end
"""
LATE_MS = 10


def lua_script(pairs: list[tuple[str, str]], rate: float = 0, threads: int = 1) -> str:
    """The wrk script: `pairs` round robin; paced to `rate` requests/s over `threads` when rate > 0."""
    body = ",\n".join(f"{{{json.dumps(path)}, {json.dumps(token)}}}" for path, token in pairs)
    script = LUA.replace("{PAIRS}", "{" + body + "}")
    if rate > 0:
        script += PACED_LUA.replace("{INTERVAL}", f"{1000 * threads / rate:.4f}").replace("{LATE_MS}", str(LATE_MS))
    return script


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
    late = re.search(r"Late sends: (\d+)", output)
    if late:
        found["late_sends"] = int(late.group(1))
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
    parser.add_argument(
        "--rates", default="0,500", help="comma-separated requests/s per run; 0: closed loop (capacity)"
    )
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
            rates = [float(r) for r in args.rates.split(",")]
            result["runs"] = []
            for n, rate in enumerate(rates):
                script = Path(tmp) / f"worklist-{n}.lua"
                script.write_text(lua_script(pairs, rate, args.threads), encoding="utf-8")
                wrk = ("-t", str(args.threads), "-c", str(args.connections), "-s", str(script), "--latency")
                await run_wrk(*wrk, "-d", f"{args.warmup}s", base)
                cpu_before, db_before = process_tree_cpu_s(proc.pid), database_cpu_s(database)
                output = await run_wrk(*wrk, "-d", f"{args.duration}s", base)
                cpu_s = process_tree_cpu_s(proc.pid) - cpu_before
                db_s = sum(cpu - db_before.get(pid, 0.0) for pid, cpu in database_cpu_s(database).items())
                console.print(f"rate {rate or 'closed loop'}:", output)
                run = {"offered_per_s": rate or None, **parse_wrk(output)}
                requests = max(run["requests"], 1)
                run["api_cpu_ms_per_request"] = round(1000 * cpu_s / requests, 2)
                run["database_cpu_ms_per_request"] = round(1000 * db_s / requests, 2)
                result["runs"].append(run)
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
