"""`carecoord` command line: serve, consume, mllp, migrate, token, rules (check, dry-run), roster (import,
diff, report, export), inbox (watch), kafka (init, topics)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
import uvicorn
from pydantic import ValidationError

from app import clock
from app.gc_tuning import tune_gc_after_startup
from app.logging_config import configure_logging
from app.messaging.commands import kafka_cli
from app.rules.commands import rules_cli
from app.settings import Settings, get_settings

if TYPE_CHECKING:
    from app.ingest.roster_import import ImportOutcome, ImportRequest, RosterImporter
    from app.runtime import Runtime

cli = typer.Typer(
    help="carecoord: transition-of-care tasks from hospital event feeds.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback's locals would print settings (database URL, secrets)
)
roster_cli = typer.Typer(help="Enrollee files: import, diff, change reports, exports.", no_args_is_help=True)
inbox_cli = typer.Typer(help="Inbox folder of enrollee files: watch and process each file once.", no_args_is_help=True)
cli.add_typer(rules_cli, name="rules")
cli.add_typer(roster_cli, name="roster")
cli.add_typer(inbox_cli, name="inbox")
cli.add_typer(kafka_cli, name="kafka")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default CARECOORD_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default CARECOORD_PORT)")] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="API processes; more than one needs an external broker (CARECOORD_KAFKA_*)")
    ] = 1,
) -> None:
    """Run the HTTP API and the Kafka consumers (embedded broker + SQLite when nothing is configured).
    With CARECOORD_RUN_CONSUMERS=false it serves the API only: replicas scale out behind a load balancer
    while `carecoord consume` processes apply the events."""
    settings = get_settings()
    configure_logging(settings.log_level)
    if workers > 1 and settings.embedded_broker:
        raise typer.BadParameter("each worker would start its own embedded broker", param_hint="--workers")
    if workers > 1:
        from app.api.workers import RestartPolicy, serve_workers

        _prepare_multiprocess_metrics(settings)
        status = serve_workers(host or settings.host, port or settings.port, workers, RestartPolicy.of(settings))
        raise typer.Exit(status)
    from app.api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        proxy_headers=False,
        access_log=False,  # the app logs route templates instead (app/api/metrics.py): no query strings
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
    )


def _prepare_multiprocess_metrics(settings: Settings) -> None:
    """N workers answer /metrics on one port: each writes its values to a shared directory that any
    of them aggregates (prometheus_client multiprocess mode). Stale files of an earlier run would be
    added in, so the directory is emptied first; set before the workers import prometheus_client."""
    import os

    from app.metrics import MULTIPROC_ENV

    folder = Path(os.environ.get(MULTIPROC_ENV) or settings.var_dir / "prometheus-multiproc")
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(folder.resolve())


def _ops_port(runtime: Runtime) -> AbstractAsyncContextManager[None]:
    """Health and metrics over HTTP for processes without the API, when CARECOORD_OPS_PORT is set."""
    from app.api.ops import ops_server

    s = runtime.settings
    return ops_server(runtime, s.ops_host, s.ops_port) if s.ops_port is not None else nullcontext()


@cli.command()
def consume() -> None:
    """Run the Kafka consumers only (scale these out by consumer group, up to the partition count)."""
    from app.runtime import Runtime

    settings = get_settings()
    configure_logging(settings.log_level)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Runtime(settings, run_consumers=True) as runtime, _ops_port(runtime):
            tune_gc_after_startup(settings)
            await stop.wait()

    asyncio.run(_main())


@cli.command()
def mllp(
    host: Annotated[str | None, typer.Option(help="bind address (default CARECOORD_MLLP_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default CARECOORD_MLLP_PORT, 2575)")] = None,
    consumers: Annotated[
        bool | None,
        typer.Option(
            "--consumers/--no-consumers",
            help="also run the Kafka consumers in this process; default: yes with the embedded broker "
            "(it is private to this process), no with a configured Kafka (run `consume` or `serve` for them)",
        ),
    ] = None,
) -> None:
    """Run the HL7 v2 MLLP listener: each message is published to Kafka, then acknowledged (AA/AE/AR)."""
    from app.ingest.mllp import MllpServer
    from app.runtime import Runtime

    settings = get_settings()
    configure_logging(settings.log_level)
    run_consumers = settings.embedded_broker if consumers is None else consumers
    if settings.embedded_broker and not run_consumers:
        raise typer.BadParameter(
            "without CARECOORD_KAFKA_BOOTSTRAP_SERVERS the broker is embedded in this process and nothing "
            "else would consume it: accepted messages would be lost on stop",
            param_hint="--no-consumers",
        )

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with (
            Runtime(settings, run_consumers=run_consumers) as runtime,
            _ops_port(runtime),
            MllpServer(runtime, host=host, port=port),
        ):
            tune_gc_after_startup(settings)
            await stop.wait()

    asyncio.run(_main())


@cli.command()
def migrate(
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            help="do not migrate: wait up to this many seconds for the database to reach this code's schema "
            "head (a Kubernetes initContainer's gate), exit 1 if it does not",
        ),
    ] = None,
) -> None:
    """Upgrade the configured database to the newest schema (Alembic head), or with --wait, wait for it."""
    from app.db.migrate import schema_is_current, upgrade_to_head
    from app.db.session import create_engine

    settings = get_settings()
    configure_logging(settings.log_level)

    async def _upgrade() -> bool:
        engine = create_engine(settings.effective_database_url)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()
        return True

    async def _wait(timeout_s: float) -> bool:
        engine = create_engine(settings.effective_database_url)
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            while True:
                try:
                    if await schema_is_current(engine):
                        return True
                except Exception as exc:  # database not reachable yet: keep waiting
                    typer.echo(f"database not ready: {type(exc).__name__}", err=True)
                if asyncio.get_running_loop().time() >= deadline:
                    return False
                await asyncio.sleep(2)
        finally:
            await engine.dispose()

    if wait is None:
        asyncio.run(_upgrade())
        typer.echo("database is at the newest schema")
        return
    if not asyncio.run(_wait(wait)):
        typer.echo("database is not at this release's schema; run `carecoord migrate` (the migration Job)", err=True)
        raise typer.Exit(1)
    typer.echo("database is at this release's schema")


@cli.command()
def token(
    role: Annotated[list[str], typer.Option("--role", help="role claim, repeatable (BHCF, PMC, PCF, RN, ...)")],
    team: Annotated[list[str] | None, typer.Option("--team", help="team claim, repeatable")] = None,
    sub: Annotated[str, typer.Option(help="user id (subject)")] = "dev-user",
    ttl: Annotated[int | None, typer.Option(help="lifetime in seconds")] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="SMART scope, repeatable (user/Task.rus); default: the roles' scopes"),
    ] = None,
) -> None:
    """Mint a development JWT signed with the configured (or generated development) secret."""
    from app.api.auth import dev_token

    typer.echo(dev_token(get_settings(), sub, role, team or [], ttl_s=ttl, scopes=scope))


@asynccontextmanager
async def _roster_services(settings: Settings) -> AsyncIterator[RosterImporter]:
    """Database, rules and importer without the broker: roster work needs no Kafka."""
    from zoneinfo import ZoneInfo

    from app.db.migrate import upgrade_to_head
    from app.db.session import create_engine, session_factory
    from app.ingest.roster_import import RosterImporter
    from app.rules.config import load_rules
    from app.rules.engine import RuleEngine

    zone = ZoneInfo(settings.facility_timezone)
    rules = RuleEngine(load_rules(settings.rules_file), zone)
    engine = create_engine(settings.effective_database_url, echo=settings.database_echo)
    try:
        if settings.should_auto_migrate:
            await upgrade_to_head(engine)
        yield RosterImporter(settings, session_factory(engine), rules, zone)
    finally:
        await engine.dispose()


FormatOption = Annotated[
    Literal["csv", "atr"] | None, typer.Option("--format", help="csv (delimited) or atr (Da Vinci ATR Group JSON)")
]
MappingOption = Annotated[str, typer.Option("--mapping", help="delimited layout (CARECOORD_ROSTER_MAPPINGS)")]
SenderOption = Annotated[str | None, typer.Option(help="who sent the file (default CARECOORD_ROSTER_DEFAULT_SENDER)")]
AsOfOption = Annotated[
    datetime | None, typer.Option("--as-of", formats=["%Y-%m-%d"], help="the roster's effective date (default today)")
]


def _request(file: Path, fmt: str | None, mapping: str, sender: str | None, as_of: datetime | None) -> ImportRequest:
    from app.ingest.roster_import import ImportRequest

    if not file.is_file():
        raise typer.BadParameter(f"no such file: {file}", param_hint="FILE")
    return ImportRequest(
        path=file,
        filename=file.name,
        format=fmt,  # type: ignore[arg-type]
        mapping=mapping,
        sender=sender,
        source="cli",
        as_of=as_of.date() if as_of else None,
    )


def _count_rows(path: Path) -> int | None:
    """Rows to expect, for the progress bar (newlines, less the header); None for JSON."""
    if path.suffix.lower() == ".json":
        return None
    count = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return max(count - 1, 0)


async def _with_progress(path: Path, work) -> ImportOutcome:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as progress:
        task = progress.add_task(path.name, total=_count_rows(path))
        outcome = await work(lambda rows: progress.update(task, completed=rows))
        progress.update(task, total=outcome.total_rows, completed=outcome.total_rows)
        return outcome


def _print_outcome(outcome: ImportOutcome, *, dry_run: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="roster diff (nothing applied)" if dry_run else f"roster import {outcome.import_id}")
    for column in ("status", "rows", "bad rows", "added", "terminated", "changed", "unchanged", "tasks +", "tasks x"):
        table.add_column(column)
    status = outcome.status + (" (already imported)" if outcome.duplicate else "")
    table.add_row(
        status,
        *(
            str(v)
            for v in (
                outcome.total_rows,
                outcome.error_rows,
                outcome.added,
                outcome.terminated,
                outcome.changed,
                outcome.unchanged,
                outcome.tasks_created,
                outcome.tasks_cancelled,
            )
        ),
    )
    console = Console()
    console.print(table)
    console.print(  # one plain line too, for scripts and logs
        f"{status}: {outcome.total_rows} rows, {outcome.error_rows} bad, {outcome.added} added, "
        f"{outcome.terminated} terminated, {outcome.changed} changed",
        soft_wrap=True,
    )
    if outcome.reason:
        console.print(f"[red]refused:[/red] {outcome.reason}")
    for error in outcome.errors[:50]:
        console.print(f"line {error.line}: {error.field or '-'}: {error.reason}")


@roster_cli.command("import")
def roster_import(
    file: Annotated[Path, typer.Argument(help="the roster file")],
    fmt: FormatOption = None,
    mapping: MappingOption = "default",
    sender: SenderOption = None,
    as_of: AsOfOption = None,
    report_dir: Annotated[
        Path | None, typer.Option(help="write the change report here as <import id>.changes.csv and .json")
    ] = None,
) -> None:
    """Import and reconcile a roster; the same file again is a no-op. Exit 1 if the file is refused."""
    settings = get_settings()
    configure_logging(settings.log_level)
    request = _request(file, fmt, mapping, sender, as_of)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)

    async def _main() -> ImportOutcome:
        async with _roster_services(settings) as importer:
            outcome = await _with_progress(file, lambda progress: importer.run(request, progress))
            if report_dir is not None and outcome.import_id is not None:
                await _write_reports(importer, outcome.import_id, report_dir)
            return outcome

    outcome = asyncio.run(_main())
    _print_outcome(outcome)
    if outcome.status != "completed":
        raise typer.Exit(1)


async def _write_reports(importer: RosterImporter, import_id: object, directory: Path) -> None:
    from app.ingest.roster_files import change_report_lines

    for fmt in ("csv", "json"):
        with (directory / f"{import_id}.changes.{fmt}").open("w", encoding="utf-8", newline="") as f:
            async for line in change_report_lines(importer.sessions, import_id, fmt):  # type: ignore[arg-type]
                f.write(line)


@roster_cli.command("diff")
def roster_diff(
    file: Annotated[Path, typer.Argument(help="the roster file")],
    fmt: FormatOption = None,
    mapping: MappingOption = "default",
    sender: SenderOption = None,
    as_of: AsOfOption = None,
) -> None:
    """Show what importing FILE would change, changing nothing (no job is recorded either)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    request = _request(file, fmt, mapping, sender, as_of)

    async def _main() -> ImportOutcome:
        async with _roster_services(settings) as importer:
            return await _with_progress(file, lambda progress: importer.diff(request, progress))

    outcome = asyncio.run(_main())
    _print_outcome(outcome, dry_run=True)
    if outcome.changes:
        from app.roster.exports import csv_lines

        sys.stdout.writelines(csv_lines(("kind", "member_id", "effective_date", "fields"), outcome.changes))
    if outcome.status != "completed":
        raise typer.Exit(1)


@roster_cli.command("report")
def roster_report(
    import_id: Annotated[str, typer.Argument(help="the import's id")],
    fmt: Annotated[Literal["csv", "json"], typer.Option("--format")] = "csv",
    out: Annotated[Path | None, typer.Option(help="file to write (default stdout)")] = None,
) -> None:
    """The change report of an import (adds, terminations, changes with effective dates)."""
    import uuid

    from app.ingest.roster_files import change_report_lines

    settings = get_settings()
    try:
        job_id = uuid.UUID(import_id)
    except ValueError:
        raise typer.BadParameter("not an import id", param_hint="IMPORT_ID") from None

    async def _main() -> None:
        async with _roster_services(settings) as importer:
            await _write_stream(change_report_lines(importer.sessions, job_id, fmt), out)

    asyncio.run(_main())


@roster_cli.command("export")
def roster_export(
    kind: Annotated[
        Literal["ens", "status", "atr"],
        typer.Argument(help="ens: ENS subscription roster (CSV); status: engagement status file (CSV); atr: ATR Group"),
    ],
    sender: Annotated[str | None, typer.Option(help="one sender's members (default: all)")] = None,
    out: Annotated[Path | None, typer.Option(help="file to write (default stdout)")] = None,
) -> None:
    """Export active members: the ENS vendor's subscription roster, the ACO's status file, or ATR JSON."""
    from zoneinfo import ZoneInfo

    from app.ingest.roster_files import export_lines

    settings = get_settings()
    today = clock.today(ZoneInfo(settings.facility_timezone))

    async def _main() -> None:
        async with _roster_services(settings) as importer:
            await _write_stream(export_lines(importer.sessions, kind, sender, today), out)

    asyncio.run(_main())


async def _write_stream(lines: AsyncIterator[str], out: Path | None) -> None:
    if out is None:
        async for line in lines:
            sys.stdout.write(line)
        return
    with out.open("w", encoding="utf-8", newline="") as f:
        async for line in lines:
            f.write(line)


@inbox_cli.command("watch")
def inbox_watch(
    directory: Annotated[Path, typer.Argument(help="the inbox folder (processed/, rejected/ are made inside)")],
    once: Annotated[bool, typer.Option("--once", help="one pass (files, then the schedule), then exit")] = False,
) -> None:
    """Process each file dropped in DIRECTORY exactly once, and alert data staff when an expected daily
    file is missing by its cutoff (CARECOORD_INBOX_SCHEDULE)."""
    from app.inbox.watcher import InboxWatcher

    settings = get_settings()
    configure_logging(settings.log_level)
    if not directory.is_dir():
        raise typer.BadParameter(f"not a directory: {directory}", param_hint="DIRECTORY")

    async def _main() -> None:
        async with _roster_services(settings) as importer:
            watcher = InboxWatcher(directory, importer)
            if once:
                await watcher.poll_once()
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await watcher.run(stop)

    asyncio.run(_main())


def main() -> None:
    try:
        cli()
    except ValidationError as exc:  # a configuration error: name the settings, never their values
        for error in exc.errors(include_input=False, include_url=False):
            where = "CARECOORD_" + "__".join(str(part) for part in error["loc"]).upper() if error["loc"] else "settings"
            print(f"configuration error: {where}: {error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None
