"""`carecoord kafka init|topics`: create the service's topics on a production cluster (where neither the
broker nor the service creates them on the fly), and show what they should be."""

from __future__ import annotations

import asyncio

import typer

from app.logging_config import configure_logging
from app.settings import get_settings

kafka_cli = typer.Typer(help="Kafka topics: create them (idempotent) or list what the service expects.")


@kafka_cli.command()
def init() -> None:
    """Create every missing topic with the configured partitions, replication and retention.

    Existing topics are left as they are (re-running is safe); a partition count that differs from the
    configuration is reported and exits 3, because changing it would move patients to other partitions."""
    from app.messaging.kafka_clients import KafkaConnection
    from app.messaging.topics import ensure_topics, min_insync_replicas, topic_specs

    settings = get_settings()
    configure_logging(settings.log_level)
    if settings.embedded_broker:
        raise typer.BadParameter("set CARECOORD_KAFKA_BOOTSTRAP_SERVERS: the embedded broker creates its own topics")
    specs = topic_specs(settings)
    report = asyncio.run(
        ensure_topics(
            KafkaConnection.from_settings(settings),
            specs,
            settings.kafka_replication_factor,
            min_insync_replicas(settings),
        )
    )
    for spec in specs:
        state = "created" if spec.name in report.created else "exists"
        typer.echo(f"{state:8} {spec.name} partitions={spec.partitions} retention.ms={spec.retention_ms}")
    for name, (configured, actual) in report.partition_mismatches.items():
        typer.echo(f"MISMATCH {name}: configured {configured} partitions, cluster has {actual}", err=True)
    if report.partition_mismatches:
        raise typer.Exit(3)


@kafka_cli.command()
def topics() -> None:
    """Print the topics the configuration expects (name, partitions, retention, purpose); no broker needed."""
    from app.messaging.topics import topic_specs

    for spec in topic_specs(get_settings()):
        typer.echo(f"{spec.name}\t{spec.partitions}\t{spec.retention_ms}\t{spec.purpose}")
