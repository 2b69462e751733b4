"""`carecoord inbox watch DIR`: every file dropped in DIR is imported exactly once.

Claiming is an atomic rename into DIR/processing/, so of several watchers one wins each file.
The winner holds an exclusive lock (flock) on it while importing; a watcher that died mid-file
leaves it in processing/ unlocked, and the next poll of any watcher takes it over. The import
itself is idempotent (sender + checksum, one transaction), so a file interrupted at any point is
applied once. Afterwards the file moves to processed/, or to rejected/ beside a `.reason.txt`.
Files still being written are left alone until unchanged for CARECOORD_INBOX_SETTLE_S.

Only regular files in DIR itself are read: a symbolic link (to /etc/passwd, to a file elsewhere), a
hard link, a FIFO or a device is refused into rejected/ with its reason and never opened for reading
(O_NOFOLLOW); subfolders are not descended into. A file that would terminate most of its sender's
members is held in held/<import id>~<name> until data staff confirm (then it is applied) or reject it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import stat
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app import clock
from app.db.models import Task
from app.inbox.schedule import entry_for, overdue
from app.ingest.roster_import import ImportOutcome, ImportRequest, RosterImporter
from app.metrics import INBOX_FILE_MISSING, INBOX_FILES_REJECTED, INBOX_MISSING_FILES
from app.rules.engine import CreateTask
from app.state.rosters import COMPLETED, CONFIRMED, HELD, REJECTED, get_import, last_completed_import
from app.state.tasks import create_task_once

log = logging.getLogger(__name__)

ALERT_RULE = "inbox-schedule"
ALERT_RULE_VERSION = "1"
CLAIM_SEPARATOR = "~"  # processing/<claim id>~<original name>


class InboxWatcher:
    def __init__(self, directory: Path, importer: RosterImporter) -> None:
        self.inbox = directory
        self.processing = directory / "processing"
        self.processed = directory / "processed"
        self.rejected = directory / "rejected"
        self.held = directory / "held"
        for folder in (self.processing, self.processed, self.rejected, self.held):
            folder.mkdir(exist_ok=True)
            if folder.is_symlink() or not folder.is_dir():
                raise ValueError(f"{folder} must be a directory inside the inbox, not a link")
        self.importer = importer
        self.settings = importer.settings

    async def run(self, stop: asyncio.Event) -> None:
        log.info("inbox watching", extra={"directory": str(self.inbox)})
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception:  # a database outage must not end the watcher; the next poll retries
                log.exception("inbox poll failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.inbox_poll_interval_s)

    async def poll_once(self, now: datetime | None = None) -> list[ImportOutcome]:
        outcomes = await self._release_decided()
        for path in self._settled_arrivals():
            claimed = self._claim(path)
            if claimed is not None:
                outcomes += await self._process(claimed)
        for orphan in sorted(self.processing.iterdir()):
            outcomes += await self._process(orphan)  # left by a watcher that stopped mid-file
        await self.check_schedule(now or clock.now())
        return outcomes

    def _settled_arrivals(self) -> list[Path]:
        cutoff = time.time() - self.settings.inbox_settle_s  # file mtimes are OS-stamped: the OS clock
        arrivals = []
        for path in sorted(self.inbox.iterdir()):
            if path.name.startswith("."):
                continue  # hidden names are the usual upload-in-progress convention
            with contextlib.suppress(FileNotFoundError):
                info = os.lstat(path)  # the entry itself: a link is never followed
                if stat.S_ISDIR(info.st_mode):
                    continue  # our own folders; subfolders are not read
                if info.st_mtime <= cutoff:
                    arrivals.append(path)  # links and special files too: claimed, then refused visibly
        return arrivals

    async def _release_decided(self) -> list[ImportOutcome]:
        """Held files data staff have decided on: confirmed ones go back to processing/ (applied on
        this poll), rejected ones to rejected/ with the decision as reason."""
        outcomes: list[ImportOutcome] = []
        for path in sorted(self.held.iterdir()):
            if path.name.endswith(".reason.txt") or CLAIM_SEPARATOR not in path.name:
                continue
            job_id, name = path.name.split(CLAIM_SEPARATOR, 1)
            try:
                import_id = uuid.UUID(job_id)
            except ValueError:
                continue
            async with self.importer.sessions() as session:
                job = await get_import(session, import_id)
            if job is None or job.status == HELD:
                continue
            path.with_name(path.name + ".reason.txt").unlink(missing_ok=True)
            if job.status == CONFIRMED:
                self._claim(path, name)
            elif job.status == REJECTED:
                outcome = ImportOutcome(import_id=import_id, status=REJECTED, reason=job.reason)
                await self._file(path, name, outcome)
                outcomes.append(outcome)
        return outcomes

    def _claim(self, path: Path, name: str | None = None) -> Path | None:
        target = self.processing / f"{uuid.uuid4().hex[:12]}{CLAIM_SEPARATOR}{name or path.name}"
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None  # another watcher claimed it first
        return target

    async def _process(self, claimed: Path) -> list[ImportOutcome]:
        name = claimed.name.split(CLAIM_SEPARATOR, 1)[-1]
        try:
            fd = os.open(claimed, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return []
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            return [await self._refuse(claimed, name, "a symbolic link: refused, not followed")]
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            os.close(fd)
            why = (
                "not a regular file" if not stat.S_ISREG(info.st_mode) else "a hard link (its data may live elsewhere)"
            )
            return [await self._refuse(claimed, name, f"{why}: refused, not read")]
        with os.fdopen(fd, "rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []  # a live watcher is on it
            try:
                if os.stat(claimed).st_ino != os.fstat(handle.fileno()).st_ino:
                    return []
            except FileNotFoundError:
                return []  # finished and moved away while we were opening it
            return [await self._import(claimed)]

    async def _import(self, claimed: Path) -> ImportOutcome:
        name = claimed.name.split(CLAIM_SEPARATOR, 1)[-1]
        schedule = self.settings.inbox_schedule
        entry = entry_for(name, schedule)
        if schedule and entry is None:
            reason = "no sender in CARECOORD_INBOX_SCHEDULE matches this file name"
            outcome = ImportOutcome(import_id=None, status="rejected", reason=reason)
        else:
            request = ImportRequest(
                path=claimed,
                filename=name,
                format=entry.format if entry else None,
                mapping=entry.mapping if entry else "default",
                sender=entry.sender if entry else None,
                source="inbox",
            )
            outcome = await self.importer.run(request)
        await self._file(claimed, name, outcome)
        log.info("inbox file done", extra={"import_id": str(outcome.import_id), "status": outcome.status})
        return outcome

    async def _refuse(self, claimed: Path, name: str, reason: str) -> ImportOutcome:
        outcome = ImportOutcome(import_id=None, status=REJECTED, reason=reason)
        await self._file(claimed, name, outcome)
        log.warning("inbox entry refused", extra={"reason": reason})
        return outcome

    async def _file(self, claimed: Path, name: str, outcome: ImportOutcome) -> None:
        if outcome.status == COMPLETED:
            self._move(claimed, self.processed, name, outcome)
        elif outcome.status == HELD:
            target = self.held / f"{outcome.import_id}{CLAIM_SEPARATOR}{name}"
            os.replace(claimed, target)
            target.with_name(target.name + ".reason.txt").write_text(
                f"{outcome.reason}\nimport: {outcome.import_id}\n"
                "confirm or reject: POST /rosters/imports/<import>/confirm | /reject (data staff)\n",
                encoding="utf-8",
            )
            await self._alert(
                f"inbox-held|{outcome.import_id}",
                "roster-file-held",
                {"policy": "roster-hold", "file": name, "import_id": str(outcome.import_id), "reason": outcome.reason},
                clock.now(),
            )
        else:
            target = self._move(claimed, self.rejected, name, outcome)
            target.with_name(target.name + ".reason.txt").write_text(
                f"{outcome.reason}\nimport: {outcome.import_id}\n"
                f"bad rows: {outcome.error_rows} of {outcome.total_rows} (see `carecoord roster report` / the API)\n",
                encoding="utf-8",
            )
            await self._alert(
                f"inbox-rejected|{outcome.import_id or claimed.name}",
                "roster-file-rejected",
                {"policy": "inbox", "file": name, "import_id": str(outcome.import_id), "reason": outcome.reason},
                clock.now(),
            )
            INBOX_FILES_REJECTED.inc()

    def _move(self, claimed: Path, folder: Path, name: str, outcome: ImportOutcome) -> Path:
        target = folder / name
        if target.exists():
            target = folder / f"{name}.{outcome.import_id or uuid.uuid4().hex[:12]}"
        os.replace(claimed, target)
        return target

    async def check_schedule(self, now: datetime) -> None:
        """A sender's daily file not imported by its cutoff: one alert task per sender and day."""
        zone = self.importer.zone
        for expected in overdue(self.settings.inbox_schedule, now, zone):
            sender = expected.entry.sender
            async with self.importer.sessions() as session:
                arrived = await last_completed_import(session, sender, expected.day_start.astimezone(UTC))
            INBOX_FILE_MISSING.labels(sender).set(0 if arrived else 1)
            if arrived:
                continue
            created = await self._alert(
                f"inbox-missing|{sender}|{expected.day_start.date().isoformat()}",
                "roster-file-missing",
                {
                    "policy": "inbox-schedule",
                    "sender": sender,
                    "cutoff": expected.cutoff.isoformat(),
                    "pattern": expected.entry.pattern,
                },
                now,
            )
            if created is not None:
                INBOX_MISSING_FILES.labels(sender).inc()
                log.warning("expected roster file missing", extra={"sender": sender, "task_id": str(created.id)})

    async def _alert(self, key: str, task_type: str, basis: dict[str, object], now: datetime) -> Task | None:
        effect = CreateTask(
            dedupe_key=key[:512],
            type=task_type,
            priority="urgent",
            role=self.settings.inbox_alert_role,
            team=None,
            due_at=now + timedelta(hours=1),
            due_basis=basis,
            route_basis={"role": self.settings.inbox_alert_role, "reason": "operational alert"},
            rule_id=ALERT_RULE,
            rule_version=ALERT_RULE_VERSION,
            encounter_id=None,
            triggering_event_ids=(),
        )
        async with self.importer.sessions() as session, session.begin():
            return await create_task_once(session, effect, None)
