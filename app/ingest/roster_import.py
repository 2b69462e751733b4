"""Roster import front door shared by the CLI, the API and the inbox watcher.

A file becomes a job (`roster_imports` row, unique per sender + SHA-256, so the same file again is
a no-op), then one transaction parses it (streaming, in a worker thread so the event loop stays
responsive), stages the rows and reconciles. Bad rows are recorded with line and reason and
skipped; past the error ratio the file is refused whole. A crash rolls everything back and the
job stays retryable; a concurrent run of the same job waits on the claim and finds it done.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date
from itertools import islice
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from app import clock
from app.db.models import RosterImport, utcnow
from app.metrics import ROSTER_CHANGES, ROSTER_IMPORTS
from app.roster.atr import read_atr
from app.roster.delimited import RosterFileError, read_delimited
from app.roster.mapping import DEFAULT_MAPPING_NAME, MappingError, RosterMapping, load_mappings
from app.roster.reconcile import judge_file, judge_terminations
from app.roster.records import MemberRecord, RowError
from app.rules.engine import RuleEngine
from app.settings import Settings
from app.state import rosters as store

log = logging.getLogger(__name__)

RosterFormat = Literal["csv", "atr"]
Progress = Callable[[int], None]
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ImportRequest:
    path: Path
    filename: str
    format: RosterFormat | None = None  # None: by extension (.json = atr)
    mapping: str = DEFAULT_MAPPING_NAME
    sender: str | None = None
    source: str = "cli"
    as_of: date | None = None

    @property
    def resolved_format(self) -> RosterFormat:
        return self.format or ("atr" if self.filename.lower().endswith(".json") else "csv")


@dataclass
class ImportOutcome:
    import_id: uuid.UUID | None
    status: str
    duplicate: bool = False
    total_rows: int = 0
    error_rows: int = 0
    added: int = 0
    terminated: int = 0
    changed: int = 0
    unchanged: int = 0
    tasks_created: int = 0
    tasks_cancelled: int = 0
    reason: str | None = None
    errors: list[RowError] = field(default_factory=list)  # dry runs only (a real run stores them)
    changes: list[tuple[str, str, date, str]] = field(default_factory=list)  # dry runs: kind, member, date, fields

    @classmethod
    def of(cls, row: RosterImport, duplicate: bool = False) -> ImportOutcome:
        return cls(
            import_id=row.id,
            status=row.status,
            duplicate=duplicate,
            total_rows=row.total_rows,
            error_rows=row.error_rows,
            added=row.added,
            terminated=row.terminated,
            changed=row.changed,
            unchanged=row.unchanged,
            tasks_created=row.tasks_created,
            tasks_cancelled=row.tasks_cancelled,
            reason=row.reason,
        )


def file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class _Rollback(Exception):
    pass


class _Hold(Exception):
    pass


def open_regular(path: Path, mode: str = "rb", **kwargs: Any) -> Any:
    """Open a roster file without following a symbolic link (O_NOFOLLOW), and only a regular file:
    a link planted in an inbox or an upload folder is refused, never read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RosterFileError("a symbolic link: refused, not followed") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RosterFileError("not a regular file: refused")
    return os.fdopen(fd, mode, **kwargs)


class RosterImporter:
    def __init__(
        self, settings: Settings, sessions: async_sessionmaker, rule_engine: RuleEngine, zone: ZoneInfo
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.rules = rule_engine
        self.zone = zone
        self.mappings = load_mappings(settings.roster_mappings)

    def mapping(self, name: str) -> RosterMapping:
        try:
            return self.mappings[name]
        except KeyError:
            raise MappingError(f"unknown mapping {name!r} (configured: {', '.join(sorted(self.mappings))})") from None

    def today(self) -> date:
        return clock.today(self.zone)

    async def register(self, req: ImportRequest) -> tuple[RosterImport, bool]:
        """The job for this file: existing (True) when this sender already sent these exact bytes."""
        self.mapping(req.mapping)
        sender = req.sender or self.settings.roster_default_sender
        checksum = await asyncio.to_thread(file_checksum, req.path)
        async with self.sessions() as session:
            existing = await store.find_import(session, sender, checksum)
            if existing is not None:
                return existing, existing.status in store.SETTLED
            row = RosterImport(
                sender=sender,
                format=req.resolved_format,
                mapping=req.mapping if req.resolved_format == "csv" else "atr",
                filename=req.filename[:255],
                checksum=checksum,
                source=req.source,
                status=store.QUEUED,
                as_of=req.as_of or self.today(),
            )
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:  # a concurrent registration of the same file won
                await session.rollback()
                existing = await store.find_import(session, sender, checksum)
                assert existing is not None
                return existing, existing.status in store.SETTLED
            return row, False

    async def run(self, req: ImportRequest, progress: Progress | None = None) -> ImportOutcome:
        job, duplicate = await self.register(req)
        if duplicate:
            log.info("roster already imported", extra={"import_id": str(job.id), "status": job.status})
            return ImportOutcome.of(job, duplicate=True)
        return await self.process(job.id, req, progress)

    async def process(
        self, import_id: uuid.UUID, req: ImportRequest, progress: Progress | None = None
    ) -> ImportOutcome:
        async with self.sessions() as session:
            job = await store.get_import(session, import_id)
        assert job is not None
        try:
            outcome = await self._apply(job, req, progress, dry_run=False)
        except Exception as exc:
            async with self.sessions() as session, session.begin():
                await store.finish_import(
                    session, import_id, store.FAILED, reason=f"internal error: {type(exc).__name__}"
                )
            ROSTER_IMPORTS.labels(store.FAILED).inc()
            log.exception("roster import failed", extra={"import_id": str(import_id)})
            raise
        ROSTER_IMPORTS.labels(outcome.status).inc()
        log.info(
            "roster import finished",
            extra={
                "import_id": str(import_id),
                "status": outcome.status,
                "rows": outcome.total_rows,
                "errors": outcome.error_rows,
                "added": outcome.added,
                "terminated": outcome.terminated,
                "changed": outcome.changed,
            },
        )
        return outcome

    async def diff(self, req: ImportRequest, progress: Progress | None = None) -> ImportOutcome:
        """What importing would change, without changing anything (everything is rolled back)."""
        sender = req.sender or self.settings.roster_default_sender
        job = RosterImport(
            id=uuid.uuid4(),
            sender=sender,
            format=req.resolved_format,
            mapping=req.mapping,
            filename=req.filename[:255],
            checksum="dry-run:" + uuid.uuid4().hex,
            source=req.source,
            status=store.QUEUED,
            as_of=req.as_of or self.today(),
            received_at=utcnow(),
        )
        return await self._apply(job, req, progress, dry_run=True)

    def _records(self, req: ImportRequest, as_of: date) -> Iterator[MemberRecord | RowError]:
        if req.resolved_format == "atr":
            with open_regular(req.path) as f:
                return read_atr(f.read(), as_of=as_of, today=self.today())
        mapping = self.mapping(req.mapping)

        def lines() -> Iterator[MemberRecord | RowError]:
            with open_regular(req.path, "r", encoding="utf-8-sig", newline="") as f:
                yield from read_delimited(f, mapping, today=self.today())

        return lines()

    async def _apply(
        self, job: RosterImport, req: ImportRequest, progress: Progress | None, *, dry_run: bool
    ) -> ImportOutcome:
        outcome = ImportOutcome(import_id=None if dry_run else job.id, status=store.COMPLETED)
        confirmed = job.status == store.CONFIRMED  # data staff confirmed a held file: no second hold
        batch_rows = self.settings.roster_batch_rows
        try:
            async with self.sessions() as session, session.begin():
                if dry_run:
                    session.add(job)
                    await session.flush()
                elif not await store.claim_import(session, job.id):
                    done = await store.get_import(session, job.id)
                    assert done is not None
                    return ImportOutcome.of(done, duplicate=True)
                await store.create_staging(
                    session, self.settings.roster_temp_buffers_mb, self.settings.roster_work_mem_mb
                )
                try:
                    records = await asyncio.to_thread(self._records, req, job.as_of)

                    def take() -> tuple[int, list[tuple[Any, ...]], list[RowError]]:
                        chunk = list(islice(records, batch_rows))
                        rows = [store.staged_row(r, job.as_of) for r in chunk if isinstance(r, MemberRecord)]
                        return len(chunk), rows, [r for r in chunk if isinstance(r, RowError)]

                    # The next chunk is parsed while this one is written: the database works meanwhile.
                    upcoming = asyncio.ensure_future(asyncio.to_thread(take))
                    while (taken := await upcoming)[0]:
                        upcoming = asyncio.ensure_future(asyncio.to_thread(take))
                        count, rows, errors = taken
                        outcome.total_rows += count
                        outcome.error_rows += len(errors)
                        if rows:
                            await store.stage_rows(session, rows)
                        if dry_run:
                            outcome.errors.extend(errors)
                        else:
                            await store.record_row_errors(session, job.id, errors)
                        if progress:
                            progress(outcome.total_rows)
                except UnicodeDecodeError as exc:
                    raise RosterFileError(f"not UTF-8 text (byte {exc.start} of a read block)") from None
                verdict = judge_file(outcome.total_rows, outcome.error_rows, self.settings.roster_max_error_ratio)
                if not verdict.accepted:
                    raise RosterFileError(verdict.reason or "refused")
                active_before = await store.active_member_count(session, job.sender)
                counts = await store.reconcile(
                    session,
                    import_id=job.id,
                    sender=job.sender,
                    as_of=job.as_of,
                    plans=self.rules.on_members_added(job.received_at, job.as_of),
                )
                for name, value in asdict(counts).items():
                    setattr(outcome, name, value)
                hold = judge_terminations(
                    active_before,
                    counts.terminated,
                    self.settings.roster_hold_termination_ratio,
                    self.settings.roster_hold_min_terminations,
                )
                if dry_run:
                    outcome.changes = await store.change_summaries(session, job.id)
                    outcome.reason = hold.reason
                    raise _Rollback
                if not hold.accepted and not confirmed:
                    outcome.status, outcome.reason = store.HELD, hold.reason
                    raise _Hold
                await store.drop_staging(session)
                await store.finish_import(session, job.id, store.COMPLETED, **_counts(outcome))
        except _Rollback:
            return outcome
        except _Hold:  # nothing applied; the job waits for data staff with what it would have done
            async with self.sessions() as session, session.begin():
                if await store.claim_import(session, job.id):
                    await store.finish_import(session, job.id, store.HELD, reason=outcome.reason, **_counts(outcome))
            return outcome
        except (RosterFileError, MappingError) as exc:
            outcome.status, outcome.reason = store.REJECTED, str(exc)
            if not dry_run:
                await self._reject(job.id, job.as_of, outcome, req)
            return outcome
        for kind in ("added", "terminated", "changed"):
            ROSTER_CHANGES.labels(kind).inc(getattr(outcome, kind))
        return outcome

    async def _reject(self, import_id: uuid.UUID, as_of: date, outcome: ImportOutcome, req: ImportRequest) -> None:
        """A refused file keeps its job (so the same bytes stay refused) and its row errors, re-read
        here because the refusing transaction rolled back."""
        async with self.sessions() as session, session.begin():
            if not await store.claim_import(session, import_id):
                return

            def bad_rows() -> list[RowError]:
                with contextlib.suppress(RosterFileError, MappingError, UnicodeDecodeError):
                    return [r for r in self._records(req, as_of) if isinstance(r, RowError)]
                return []

            errors = await asyncio.to_thread(bad_rows)
            await store.record_row_errors(session, import_id, errors)
            await store.finish_import(session, import_id, store.REJECTED, reason=outcome.reason, **_counts(outcome))


def _counts(o: ImportOutcome) -> dict[str, int]:
    return {
        "total_rows": o.total_rows,
        "error_rows": o.error_rows,
        "added": o.added,
        "terminated": o.terminated,
        "changed": o.changed,
        "unchanged": o.unchanged,
        "tasks_created": o.tasks_created,
        "tasks_cancelled": o.tasks_cancelled,
    }
