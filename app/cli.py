"""`carecoord` command line: serve, consume, mllp, migrate, token, rules."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
import uvicorn

from app.logging_config import configure_logging
from app.rules.commands import rules_cli
from app.settings import get_settings

cli = typer.Typer(help="carecoord: transition-of-care tasks from hospital event feeds.", no_args_is_help=True)
cli.add_typer(rules_cli, name="rules")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default CARECOORD_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default CARECOORD_PORT)")] = None,
) -> None:
    """Run the HTTP API and the Kafka consumers (embedded broker + SQLite when nothing is configured)."""
    from app.api.app import create_app

    settings = get_settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        proxy_headers=False,
    )


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
        async with Runtime(settings, run_consumers=True):
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
        async with Runtime(settings, run_consumers=run_consumers) as runtime, MllpServer(runtime, host=host, port=port):
            await stop.wait()

    asyncio.run(_main())


@cli.command()
def migrate() -> None:
    """Upgrade the configured database to the newest schema (Alembic head)."""
    from app.db.migrate import upgrade_to_head
    from app.db.session import create_engine

    settings = get_settings()
    configure_logging(settings.log_level)

    async def _main() -> None:
        engine = create_engine(settings.effective_database_url)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(_main())
    typer.echo("database is at the newest schema")


@cli.command()
def token(
    role: Annotated[list[str], typer.Option("--role", help="role claim, repeatable (BHCF, PMC, PCF, RN, ...)")],
    team: Annotated[list[str] | None, typer.Option("--team", help="team claim, repeatable")] = None,
    sub: Annotated[str, typer.Option(help="user id (subject)")] = "dev-user",
    ttl: Annotated[int | None, typer.Option(help="lifetime in seconds")] = None,
) -> None:
    """Mint a development JWT signed with the configured (or generated development) secret."""
    from app.api.auth import mint_token

    settings = get_settings()
    typer.echo(mint_token(settings, sub, role, team or [], ttl or settings.dev_token_ttl_s))


def main() -> None:
    cli()
