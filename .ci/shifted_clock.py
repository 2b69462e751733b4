"""Print a libfaketime FAKETIME value that moves the clock of every process started under it by the
same offset (so the test process, the service subprocesses and the broker agree on "now"):

    year  a year ahead of today
    dst   five minutes before the next US daylight-saving change (America/New_York), so the suite
          runs across the jump

An offset ("+Ns"), not an absolute start ("@..."): libfaketime starts an absolute clock afresh in
each process, and a subprocess would then run behind its parent."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")


def next_dst_change(after: datetime) -> datetime:
    at = after.replace(minute=0, second=0, microsecond=0)
    offset = at.astimezone(NEW_YORK).utcoffset()
    while (at + timedelta(hours=1)).astimezone(NEW_YORK).utcoffset() == offset:
        at += timedelta(hours=1)
    return at + timedelta(hours=1)


def main(kind: str) -> None:
    now = datetime.now(UTC)
    target = now + timedelta(days=365) if kind == "year" else next_dst_change(now) - timedelta(minutes=5)
    print(f"+{int((target - now).total_seconds())}s")
    print(f"clock for this run: {target:%Y-%m-%d %H:%M} UTC", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
