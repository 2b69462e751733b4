"""HL7 v2 decode micro-benchmark: python-hl7 reference vs the fast ER7 reader, on bench/ingest.py's corpus.

Times `decode_adt_reference` (hl7.parse + accessors) and `decode_adt` (app/consumers/hl7v2_fast.py) over
the same 2-4 KB ADT messages, checks that both give equal results, and prints ms/message and
messages/s for each (best of --rounds rounds, so other load on the machine counts as little as possible;
the median is shown too). Pure CPU: no broker, no database.

Usage:
  .venv/bin/python bench/decode.py [--messages 2000] [--rounds 5] [--json results.json]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.consumers.hl7_time import parse_instant
from app.consumers.hl7v2_decode import (
    DecodeOptions,
    decode_adt,
    decode_adt_reference,
    parse_message,
    read_message,
)
from app.encounters.notice import EncounterNotice


def load_corpus(n: int, seed: int = 7) -> list[str]:
    """bench/ingest.py's `corpus` (bench/ is not a package: load the file as a module)."""
    spec = importlib.util.spec_from_file_location("bench_ingest", ROOT / "bench" / "ingest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return [m.payload.decode("utf-8") for m in module.corpus(n, seed=seed)]


def time_rounds(
    decode: Callable[[str, DecodeOptions], EncounterNotice], texts: list[str], options: DecodeOptions, rounds: int
) -> list[float]:
    """Seconds per round over all texts (gc paused inside a round, as in timeit)."""
    for text in texts[:50]:
        decode(text, options)  # warm-up: imports, caches
    elapsed: list[float] = []
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            for text in texts:
                decode(text, options)
            elapsed.append(time.perf_counter() - started)
        finally:
            gc.enable()
    return elapsed


def breakdown(texts: list[str], rounds: int) -> dict[str, float]:
    """Where the time goes: parsing alone with each reader, and the timestamps (hl7_time.parse_instant,
    the same for both readers) a decode converts."""
    zone = ZoneInfo("America/New_York")
    stamps = [value for text in texts for value in _timestamps(read_message(text))]
    per_message = len(stamps) / len(texts)
    parts: dict[str, Callable[[str], object]] = {
        "hl7.parse": lambda text: parse_message(text),
        "fast read (segments found lazily)": lambda text: read_message(text),
    }
    found = {name: min(_run(part, texts, rounds)) / len(texts) * 1000 for name, part in parts.items()}
    found[f"parse_instant x{per_message:.1f}"] = (
        min(_run(lambda value: parse_instant(value, zone), stamps, rounds)) / len(texts) * 1000
    )
    return {name: round(ms, 4) for name, ms in found.items()}


def _timestamps(msg: object) -> list[str]:
    paths = ("MSH.F7.R1.C1", "EVN.F2.R1.C1", "PV1.F44.R1.C1", "PV1.F45.R1.C1", "PID.F29.R1.C1")
    return [found for found in (msg.value(path) for path in paths) if found]


def _run(part: Callable[[str], object], items: list[str], rounds: int) -> list[float]:
    elapsed = []
    for _ in range(rounds):
        started = time.perf_counter()
        for item in items:
            part(item)
        elapsed.append(time.perf_counter() - started)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()

    texts = load_corpus(args.messages)
    sizes = [len(t.encode()) for t in texts]
    options = DecodeOptions(default_zone=ZoneInfo("America/New_York"))
    mismatched = sum(decode_adt(t, options) != decode_adt_reference(t, options) for t in texts)
    if mismatched:
        raise SystemExit(f"{mismatched} messages decode differently with the fast reader")

    results: dict = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "corpus": {"messages": len(texts), "min_bytes": min(sizes), "max_bytes": max(sizes)},
    }
    print(f"corpus: {len(texts)} messages, {min(sizes)}-{max(sizes)} bytes; both readers agree on every one")
    for name, decode in (("reference", decode_adt_reference), ("fast", decode_adt)):
        rounds = time_rounds(decode, texts, options, args.rounds)
        best, median = min(rounds) / len(texts), statistics.median(rounds) / len(texts)
        results[name] = {
            "ms_per_message": round(best * 1000, 4),
            "messages_per_second": round(1 / best),
            "median_ms_per_message": round(median * 1000, 4),
        }
        print(
            f"{name:>9}: {best * 1000:7.3f} ms/message  {1 / best:9,.0f} messages/s"
            f"  (median of {args.rounds} rounds {median * 1000:.3f} ms)"
        )
    speedup = results["reference"]["ms_per_message"] / results["fast"]["ms_per_message"]
    results["speedup"] = round(speedup, 1)
    print(f"  speedup: {speedup:.1f}x")
    results["parts_ms_per_message"] = parts = breakdown(texts, args.rounds)
    print("    parts: " + ", ".join(f"{name} {ms:.3f} ms" for name, ms in parts.items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
