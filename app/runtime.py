"""Everything the service needs at run time, started and stopped in the right order.

Used by the API (`serve`), the consumer-only process (`consume`) and the tests. In embedded mode it
starts the local broker and auto-migrates SQLite; in production it only connects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from functools import partial
from zoneinfo import ZoneInfo

from aiokafka import ConsumerRecord
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.consumers.davinci_decode import decode_davinci
from app.consumers.encounter_apply import EncounterApplier
from app.consumers.fhir_decode import decode_fhir
from app.consumers.fhir_handler import FhirHandler
from app.consumers.hl7v2_decode import DecodeOptions, decode_hl7v2
from app.consumers.notice_handler import HandleResult, NoticeHandler
from app.consumers.runner import ConsumerRunner
from app.db.migrate import upgrade_to_head
from app.db.models import utcnow
from app.db.session import create_engine, session_factory
from app.encounters.sensitivity import SensitivityPolicy
from app.messaging.embedded_broker import EmbeddedBroker
from app.messaging.kafka_clients import KafkaConnection
from app.messaging.producer import Publisher
from app.messaging.topics import ensure_topics, min_insync_replicas, topic_specs
from app.metrics import show_overdue
from app.outbox.relay import OutboxRelay, Pruning
from app.rules.config import load_rules
from app.rules.engine import RuleEngine
from app.settings import Settings
from app.state.audit import AUDIT_INSERT
from app.state.audit_batch import AuditBatcher
from app.state.tasks import escalate_overdue, overdue_counts

log = logging.getLogger(__name__)

Handler = NoticeHandler | FhirHandler  # what a feed's consumer and dead-letter replay call


class Runtime:
    def __init__(self, settings: Settings, *, run_consumers: bool = True) -> None:
        self.settings = settings
        self.run_consumers = run_consumers
        self.zone = ZoneInfo(settings.facility_timezone)
        # Fail fast on a bad rules file, before anything is started.
        self.rules = load_rules(settings.rules_file)
        self.rule_engine = RuleEngine(self.rules, self.zone, require_attribution=settings.require_attribution)
        self.broker: EmbeddedBroker | None = None
        self.engine: AsyncEngine | None = None
        self.sessions: async_sessionmaker | None = None
        self.kafka: KafkaConnection | None = None
        self.publisher: Publisher | None = None
        self.adt_handler: NoticeHandler | None = None
        self.ens_handler: NoticeHandler | None = None  # Da Vinci notifications (FHIR message Bundles)
        self.fhir_handler: FhirHandler | None = None  # FHIR clinical resources (Encounter, Observation, ...)
        self.consumers: list[ConsumerRunner] = []
        self._escalation: asyncio.Task[None] | None = None
        self.relay: OutboxRelay | None = None
        self.audit: AuditBatcher | None = None  # worklist reads' audit records (app/state/audit_batch.py)

    @property
    def bootstrap(self) -> str:
        if self.broker is not None:
            return self.broker.bootstrap_servers
        assert self.settings.kafka_bootstrap_servers
        return self.settings.kafka_bootstrap_servers

    async def start(self) -> None:
        s = self.settings
        if s.embedded_broker:
            self.broker = EmbeddedBroker(log_file=s.var_dir / "broker.log")
            await self.broker.start()
        self.engine = create_engine(
            s.effective_database_url,
            echo=s.database_echo,
            pool_size=s.database_pool_size,
            max_overflow=s.database_max_overflow,
        )
        if s.should_auto_migrate:
            await upgrade_to_head(self.engine)
        self.sessions = session_factory(self.engine)
        self.audit = AuditBatcher(self.engine, AUDIT_INSERT, s.audit_batch_max)
        self.kafka = KafkaConnection.from_settings(s, self.bootstrap)
        if s.should_create_topics:
            await ensure_topics(self.kafka, topic_specs(s), s.kafka_replication_factor, min_insync_replicas(s))
        self.publisher = Publisher(self.kafka, s)
        await self.publisher.start()
        if s.outbox_relay_enabled:
            # API actions change tasks too: every serve and consume process relays (they share the work).
            self.relay = OutboxRelay(
                sessions=self.sessions,
                publisher=self.publisher,
                topic=s.topics.task_events,
                batch=s.outbox_relay_batch,
                idle_s=s.outbox_relay_idle_s,
                retry_initial_s=s.consumer_db_retry_initial_s,
                retry_max_s=s.outbox_relay_retry_max_s,
                pruning=Pruning.of(s),
            )
            self.relay.start()
        max_skew = timedelta(seconds=s.event_time_max_skew_s)
        self.adt_handler = NoticeHandler(
            source="hl7v2",
            decode=partial(decode_hl7v2, options=self.decode_options()),
            sessions=self.sessions,
            engine=self.rule_engine,
            sensitivity=self.sensitivity_policy(),
            max_bytes=s.ingest_max_bytes,
            max_skew=max_skew,
        )
        self.ens_handler = NoticeHandler(
            source="davinci",
            decode=partial(decode_davinci, options=self.decode_options()),
            sessions=self.sessions,
            engine=self.rule_engine,
            sensitivity=self.sensitivity_policy(),
            max_bytes=s.ingest_max_bytes,
            max_skew=max_skew,
        )
        self.fhir_handler = FhirHandler(
            decode=partial(decode_fhir, options=self.decode_options(), evidence_codes=self.rule_engine.evidence_codes),
            sessions=self.sessions,
            encounters=EncounterApplier(
                source="fhir", engine=self.rule_engine, sensitivity=self.sensitivity_policy(), max_skew=max_skew
            ),
            thresholds=self.rules.screening,
            max_bytes=s.ingest_max_bytes,
            part2_instruments=frozenset(s.part2_instruments),
        )
        if self.run_consumers:
            # One consumer group per topic (the ADT group + "-ens" / "-fhir"), so no feed's
            # rebalances pause another.
            feeds: tuple[tuple[str, str, str, str, Handler], ...] = (
                (s.topics.adt, s.topics.adt_dead_letter, s.consumer_group, "adt", self.adt_handler),
                (s.topics.ens, s.topics.ens_dead_letter, f"{s.consumer_group}-ens", "ens", self.ens_handler),
                (s.topics.fhir, s.topics.fhir_dead_letter, f"{s.consumer_group}-fhir", "fhir", self.fhir_handler),
            )
            for topic, dead_letter_topic, group, name, handler in feeds:
                runner = ConsumerRunner(
                    kafka=self.kafka,
                    topic=topic,
                    group_id=group,
                    client_id=f"{s.kafka_client_id}-{name}",
                    handler=handler.handle,
                    batch_handler=(
                        handler.handle_batch
                        if s.consumer_batch_transactions and isinstance(handler, NoticeHandler)
                        else None
                    ),
                    dead_letter=partial(self._dead_letter, dead_letter_topic),
                    max_batch=s.consumer_max_batch,
                    poll_timeout_ms=s.consumer_poll_timeout_ms,
                    session_timeout_ms=s.consumer_session_timeout_ms,
                    heartbeat_interval_ms=s.consumer_heartbeat_interval_ms,
                    fetch_max_wait_ms=s.consumer_fetch_max_wait_ms,
                    max_record_bytes=s.broker_message_max_bytes,
                    retry_initial_s=s.consumer_db_retry_initial_s,
                    retry_max_s=s.consumer_db_retry_max_s,
                    shutdown_timeout_s=s.consumer_shutdown_timeout_s,
                )
                self.consumers.append(runner)
            # Each start waits out a group join (about half the session timeout): join them together.
            await asyncio.gather(*(runner.start() for runner in self.consumers))
            if s.escalation_interval_s > 0:
                self._escalation = asyncio.create_task(self._escalate_periodically(), name="escalation")
        log.info("runtime started", extra={"embedded_broker": s.embedded_broker, "consumers": len(self.consumers)})

    async def _escalate_periodically(self) -> None:
        """Overdue tasks get a higher priority and join the supervisor queue (app/state/tasks.py)."""
        assert self.sessions is not None
        while True:
            try:
                async with self.sessions() as session, session.begin():
                    escalated = await escalate_overdue(session, utcnow())
                if escalated:
                    log.info("overdue tasks escalated", extra={"tasks": escalated})
                async with self.sessions() as session:
                    show_overdue(await overdue_counts(session, utcnow()))
            except Exception:  # a database outage must not end the loop
                log.warning("escalation pass failed; will retry", exc_info=True)
            await asyncio.sleep(self.settings.escalation_interval_s)

    async def stop(self) -> None:
        if self._escalation is not None:
            self._escalation.cancel()
            await asyncio.gather(self._escalation, return_exceptions=True)
            self._escalation = None
        if self.broker is not None and self.consumers:
            await self._drain(self.settings.shutdown_drain_timeout_s)
        for runner in self.consumers:
            await runner.stop()
        self.consumers.clear()
        if self.relay is not None:
            await self.relay.stop(self.settings.consumer_shutdown_timeout_s)
            self.relay = None
        if self.publisher is not None:
            await self.publisher.stop()
        if self.audit is not None:
            await self.audit.close()
        if self.engine is not None:
            await self.engine.dispose()
        if self.broker is not None:
            await self.broker.stop()
        log.info("runtime stopped")

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _drain(self, timeout_s: float) -> None:
        """The embedded broker forgets its topics on stop: let consumers apply what was accepted."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all([await r.caught_up() for r in self.consumers]):
                return
            await asyncio.sleep(0.1)
        log.warning("stopping before consumers caught up", extra={"timeout_s": timeout_s})

    def handler_for(self, source: str) -> Handler | None:
        """The handler for a feed by its source name ("hl7v2", "davinci", "fhir"), e.g. to replay a dead letter."""
        handlers = (self.adt_handler, self.ens_handler, self.fhir_handler)
        return next((h for h in handlers if h is not None and h.source == source), None)

    def decode_options(self) -> DecodeOptions:
        s = self.settings
        return DecodeOptions(
            default_zone=self.zone,
            authority_systems=s.assigning_authority_systems,
            expired_dispositions=frozenset(s.expired_dispositions),
            observation_patient_types=frozenset(t.upper() for t in s.observation_patient_types),
        )

    def sensitivity_policy(self) -> SensitivityPolicy:
        s = self.settings
        return SensitivityPolicy(
            bh_services=frozenset(v.upper() for v in s.bh_services),
            bh_units=frozenset(v.upper() for v in s.bh_units),
            bh_icd10_range=s.bh_icd10_range,
            part2_icd10_range=s.part2_icd10_range,
            part2_services=frozenset(v.upper() for v in s.part2_services),
            part2_units=frozenset(v.upper() for v in s.part2_units),
        )

    async def _dead_letter(self, topic: str, record: ConsumerRecord, result: HandleResult) -> None:
        """Copy a rejected record to its feed's dead-letter `topic`. The exact bytes are already durable
        in `rejected_events`; the topic copy is truncated so an oversize record cannot be refused twice."""
        assert self.publisher is not None
        value = record.value or b""
        limit = self.settings.dead_letter_max_bytes
        await self.publisher.publish(
            topic,
            value[:limit],
            key=record.key,
            headers={
                "carecoord-original-size": str(len(value)),
                "carecoord-truncated": "true" if len(value) > limit else "false",
                "carecoord-reason": (result.reason or "")[:1000],
                "carecoord-field": result.field or "",
                "carecoord-source-topic": record.topic,
                "carecoord-source-partition": str(record.partition),
                "carecoord-source-offset": str(record.offset),
            },
        )

    async def database_ready(self) -> bool:
        if self.engine is None:
            return False
        try:
            # Bounded: a partitioned network answers nothing, and a probe that hangs is no answer either.
            async with asyncio.timeout(self.settings.readiness_check_timeout_s), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True
