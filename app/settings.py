"""Runtime configuration: every knob is a `CARECOORD_*` environment variable (or `.env` entry).

Leaving the database URL and Kafka bootstrap servers unset selects the embedded defaults
(SQLite file under `var_dir`, a local Tansu broker), so a fresh checkout runs with no setup.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_RULES_FILE = Path(__file__).parent / "rules" / "default_rules.toml"
# A record carries more than its value: the partition key (a 32-byte hash), carecoord's headers (event id,
# source, content type: under 200 bytes) and the record-batch framing (61 bytes + ~20 a record). 64 KiB
# is far above that, so a message of exactly CARECOORD_INGEST_MAX_BYTES always fits the producer limit.
KAFKA_RECORD_HEADROOM_BYTES = 64 * 1024


class Topics(BaseModel):
    """Kafka topic names; override with e.g. `CARECOORD_TOPICS__ADT=hospital.adt`."""

    adt: str = "carecoord.adt.v1"
    adt_dead_letter: str = "carecoord.adt.dlq.v1"
    ens: str = "carecoord.ens.v1"  # Da Vinci Unsolicited Notifications (FHIR message Bundles)
    ens_dead_letter: str = "carecoord.ens.dlq.v1"
    fhir: str = "carecoord.fhir.v1"  # FHIR clinical resources and Bundles (docs/fhir-clinical.md)
    fhir_dead_letter: str = "carecoord.fhir.dlq.v1"
    # Task changes as CloudEvents from the outbox (docs/reliability.md); `carecoord kafka init` creates it
    # with kafka_task_events_partitions / kafka_task_events_retention_ms.
    task_events: str = "carecoord.task-events.v1"


class InboxSchedule(BaseModel):
    """One sender's expected daily file: which names are theirs, how to read them, when they are late."""

    sender: str = Field(min_length=1, max_length=64)
    pattern: str = Field(min_length=1, description="fnmatch glob on the file name, e.g. `acme_roster_*.csv`")
    format: Literal["csv", "atr"] = "csv"
    mapping: str = "default"
    cutoff: str = Field(default="09:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="local HH:MM")
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = ["mon", "tue", "wed", "thu", "fri"]


class MeasureSettings(BaseModel):
    """Quality-measure windows and targets (docs/measures.md); e.g. `CARECOORD_MEASURES__CONTACT_DAYS=7`.

    Windows are the measures' own definitions (seed 003, HEDIS), independent of the rules' due policies:
    a practice on the 2-business-day TCM rule is still measured on contact within 7 days."""

    contact_days: int = Field(default=7, ge=1, description="seed 003 BB9.Y2.1: contact within 7 days of discharge")
    ed_contact_days: int = Field(default=7, ge=1, description="ED follow-up within 7 days (seed 003; HEDIS FUM/FUA)")
    med_rec_hours: int = Field(default=72, ge=1, description="seed 003 BB9.Y2.3: medication reconciliation in 72 h")
    fuh_days: list[int] = Field(default=[7, 30], min_length=1, description="HEDIS FUH follow-up windows")
    notification_hours: int = Field(default=24, ge=1, description="HEDIS TRC: admission notification within 1 day")
    targets: dict[str, float] = Field(
        default_factory=lambda: {
            "post-discharge-contact-7d": 0.5,  # seed 003 BB9.Y2.1 (SIM year 2)
            "post-ed-contact-7d": 0.5,  # the same milestone: "hospitalization or ED visit"
            "bh-referral-loop-closure": 0.5,  # seed 003 BB7.Y2.3
            "screening-reach": 0.5,  # seed 003 BB7.Y2.1 (year 1, BB7.Y1.2: 0.25)
        },
        description="measure key -> target rate (0..1); a measure without one shows no target line",
    )
    drilldown_max: int = Field(default=1000, ge=1, description="most case rows (tasks) a drill-down reads")
    event_lead_days: int = Field(
        default=2,
        ge=0,
        description="a stay's recorded discharge/admission may lie this far after its task was raised (a feed's "
        "clock ahead); cases further off are not found (docs/measures.md)",
    )
    default_period_days: int = Field(default=30, ge=1, description="period when none is given: ending today")
    max_period_days: int = Field(default=366, ge=1, description="longest period a caller may ask for")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CARECOORD_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,  # a configuration error never prints a value (secrets, passwords in URLs)
    )

    environment: Literal["development", "production"] = "development"
    var_dir: Path = Path("var")

    database_url: str | None = Field(default=None, description="SQLAlchemy async URL; unset = SQLite file in var_dir")
    database_echo: bool = False
    database_pool_size: int = Field(
        default=20,
        ge=1,
        description="connections each process keeps open (PostgreSQL): the requests in flight per worker",
    )
    database_max_overflow: int = Field(
        default=10, ge=0, description="extra connections a process may open under a burst, closed when returned"
    )
    auto_migrate: bool | None = Field(
        default=None, description="run Alembic upgrade on start; default true in development"
    )

    kafka_bootstrap_servers: str | None = Field(
        default=None, description="comma-separated host:port; unset = start the embedded Tansu broker"
    )
    kafka_client_id: str = "carecoord"
    kafka_enable_idempotence: bool = False
    kafka_create_topics: bool | None = Field(
        default=None,
        description="create missing topics on start; default true in development, false in production, "
        "where `carecoord kafka init` creates them (docs/operations.md)",
    )
    kafka_partitions: int = Field(
        default=6, ge=1, description="partitions of the input topics (ADT, ENS, FHIR): the most consumers a feed uses"
    )
    kafka_dead_letter_partitions: int = Field(default=1, ge=1, description="partitions of each dead-letter topic")
    kafka_task_events_partitions: int = Field(default=6, ge=1, description="partitions of the task-events topic")
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_min_insync_replicas: int | None = Field(
        default=None, ge=1, description="topic min.insync.replicas; default: replication factor - 1 (at least 1)"
    )
    kafka_retention_ms: int = Field(
        default=7 * 24 * 3600 * 1000, ge=-1, description="retention of the input topics (-1: keep forever)"
    )
    kafka_dead_letter_retention_ms: int = Field(
        default=30 * 24 * 3600 * 1000,
        ge=-1,
        description="retention of the dead-letter topics (rejected_events keeps all)",
    )
    kafka_task_events_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=-1)
    # Production security (docs/operations.md): SASL/SCRAM over TLS, or mutual TLS with a client certificate.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA bundle that signed the brokers' certificates")
    kafka_ssl_certfile: Path | None = Field(default=None, description="client certificate (mTLS)")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="client private key (mTLS)")
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True
    kafka_request_timeout_ms: int = Field(default=15000, ge=1000)
    kafka_max_message_bytes: int | None = Field(
        default=None,
        ge=1024,
        description=(
            "largest record batch the producer sends and the input topics are created to accept (aiokafka "
            "max_request_size, topic max.message.bytes); default CARECOORD_INGEST_MAX_BYTES + "
            "KAFKA_RECORD_HEADROOM_BYTES. Set it to the cluster's limit when that is lower: a message the "
            "broker cannot take is then refused permanently (HTTP 413, MLLP AR 104), never retried"
        ),
    )
    topics: Topics = Topics()
    measures: MeasureSettings = MeasureSettings()
    consumer_group: str = "carecoord-adt"
    consumer_session_timeout_ms: int = Field(default=10000, ge=1000)
    consumer_heartbeat_interval_ms: int = Field(default=3000, ge=100)
    consumer_batch_transactions: bool = Field(
        default=True, description="apply each poll in one transaction; falls back to one per message on failure"
    )
    consumer_fetch_max_wait_ms: int = Field(
        default=100, ge=0, description="how long the broker may hold a fetch for more data (latency vs batching)"
    )
    consumer_max_batch: int = Field(default=200, ge=1)
    consumer_poll_timeout_ms: int = Field(default=500, ge=10)
    consumer_db_retry_initial_s: float = Field(default=0.5, gt=0)
    consumer_db_retry_max_s: float = Field(default=30.0, gt=0)
    run_consumers: bool = Field(
        default=True, description="serve runs the consumers in-process; false for API-only replicas (scale-out)"
    )
    consumer_shutdown_timeout_s: float = Field(
        default=30.0, gt=0, description="on SIGTERM, how long an in-flight batch may take before it is abandoned"
    )
    outbox_relay_enabled: bool = Field(
        default=True, description="serve/consume publish task changes from the outbox to the task-events topic"
    )
    audit_batch_max: int = Field(
        default=500, ge=1, description="audit records of concurrent worklist reads written per statement at most"
    )
    outbox_relay_batch: int = Field(default=500, ge=1, description="outbox rows claimed and published per pass")
    outbox_relay_idle_s: float = Field(default=0.5, gt=0, description="wait between passes when the outbox is empty")
    outbox_relay_retry_max_s: float = Field(default=30.0, gt=0, description="longest backoff after a failed pass")
    outbox_retention_days: float = Field(
        default=7.0, ge=0, description="published outbox rows older than this are deleted by the relay; 0 keeps them"
    )
    outbox_prune_interval_s: float = Field(
        default=3600.0, gt=0, description="how often each relay deletes the published outbox rows past retention"
    )
    readiness_check_timeout_s: float = Field(
        default=2.0, gt=0, description="/readyz: a database that does not answer within this is not ready"
    )
    shutdown_drain_timeout_s: float = Field(
        default=10.0, ge=0, description="embedded mode: wait this long for consumers to catch up on stop"
    )

    jwt_secret: SecretStr | None = Field(
        default=None, description="HS256 key; development generates one in var_dir if unset"
    )
    jwt_issuer: str = "carecoord"
    jwt_audience: str = "carecoord"
    jwt_leeway_s: int = Field(default=30, ge=0)
    dev_token_ttl_s: int = Field(default=12 * 3600, gt=0)
    ingest_roles: list[str] = ["INTEGRATION"]
    supervisor_roles: list[str] = ["SUPERVISOR"]
    metrics_roles: list[str] = Field(
        default=["METRICS"], description="roles that read GET /metrics (the Prometheus scraper's token)"
    )
    admin_roles: list[str] = ["ADMIN"]  # dead-letter administration: list, read payloads, replay, discard
    part2_roles: list[str] = Field(
        default=["PART2"],
        description="roles that may see 42 CFR Part 2 data (with the patient's active consent: docs/security.md)",
    )
    jwt_algorithms: list[Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"]] = Field(
        default=["HS256"], description="accepted token algorithms: HS* verify with jwt_secret, RS*/ES* with the JWKS"
    )
    jwt_jwks_url: str | None = Field(default=None, description="the identity provider's JWKS (RS*/ES* tokens)")
    jwt_jwks_ttl_s: float = Field(default=300, gt=0, description="how long fetched signing keys are trusted")
    jwt_jwks_refetch_min_s: float = Field(
        default=10, ge=0, description="an unknown `kid` refetches the JWKS at most this often"
    )
    jwt_cache_ttl_s: float = Field(
        default=60, ge=0, description="a verified token is reused this long at most (0: verify every request)"
    )
    jwt_cache_size: int = Field(default=10_000, ge=0, description="verified tokens kept per API process")
    jwt_min_secret_bytes: int = Field(default=32, ge=16, description="production refuses a shorter HS* secret")
    require_scopes: bool | None = Field(
        default=None,
        description="tokens must carry a SMART `scope` claim; default true in production (docs/security.md)",
    )
    care_roles: list[str] = Field(
        default=["BHCF", "PMC", "PCF", "RN", "PHARMD", "SUPERVISOR"],
        description="roles that read clinical data (encounters, screenings, Observations) of patients in scope",
    )
    consent_roles: list[str] = Field(
        default=["PART2", "SUPERVISOR"], description="roles that record a patient's Part 2 consent"
    )
    auditor_roles: list[str] = Field(default=["AUDITOR"], description="roles that read the audit trail (AuditEvent)")
    part2_instruments: list[str] = Field(
        default=["AUDIT-C"], description="screening instruments whose results are substance-use (Part 2) data"
    )
    role_default_scopes: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "INTEGRATION": [
                "system/Encounter.c",
                "system/Observation.c",
                "system/Procedure.c",
                "system/DocumentReference.c",
                "system/Questionnaire.c",
                "system/QuestionnaireResponse.c",
                "system/Bundle.c",
            ],
            "AUDITOR": ["user/AuditEvent.rs"],
            "DATA": ["user/Group.cruds"],
            "ADMIN": ["user/Group.cruds"],  # dead letters are role-gated; rosters need Group
            "METRICS": [],  # the scraper reads /metrics only
        },
        description="scopes `carecoord token` grants a role when no --scope is given; unlisted roles get "
        "the care scopes (care_default_scopes)",
    )
    care_default_scopes: list[str] = Field(
        default=[
            "user/Task.rus",
            "user/CarePlan.cruds",
            "user/Patient.rs",
            "user/Encounter.rs",
            "user/Observation.rs",
            "user/QuestionnaireResponse.rs",
            "user/Consent.crs",
        ],
        description="scopes `carecoord token` grants a care role by default",
    )
    # Care plans (docs/care-plans.md): who edits and who signs off, and when a PCP sign-off falls due.
    care_plan_writer_roles: list[str] = Field(
        default=["BHCF", "PMC", "PCF", "RN", "PHARMD"],
        description="facilitator roles that create and update care plans (supervisors may too)",
    )
    pcp_roles: list[str] = Field(default=["PCP"], description="roles that sign off care plans (the patient's PCP)")
    care_plan_sign_off_due_days: int = Field(
        default=30,
        ge=1,
        description="days from activation to the first PCP sign-off (seed 004: PCP engaged within the first month)",
    )
    care_plan_sign_off_renewal_days: int = Field(
        default=365, ge=1, description="days a PCP sign-off stands before the plan is due for review again"
    )
    care_plan_sign_off_due_soon_days: int = Field(
        default=7, ge=0, description="the sign-off-due list also shows plans falling due within this many days"
    )

    rules_file: Path = DEFAULT_RULES_FILE
    escalation_interval_s: float = Field(
        default=300, ge=0, description="how often serve/consume escalate overdue tasks; 0 turns it off"
    )
    require_attribution: bool = Field(
        default=True, description="rules raise tasks only for members on the current roster (a rule may override)"
    )
    facility_timezone: str = Field(default="America/New_York", description="zone for HL7 timestamps without an offset")
    assigning_authority_systems: dict[str, str] = Field(
        default_factory=dict, description="PID-3.4 assigning authority -> identifier system URI"
    )
    expired_dispositions: list[str] = Field(
        default=["20", "40", "41", "42"], description="PV1-36 codes meaning the patient died (UB-04)"
    )
    observation_patient_types: list[str] = Field(
        default=["OBS"], description="PV1-18 patient types that mean an observation stay (Encounter.class OBSENC)"
    )
    bh_services: list[str] = Field(
        default=["PSY", "PSYCH", "BH", "BHU", "SUD", "CD"], description="PV1-10 services that mark a BH encounter"
    )
    bh_units: list[str] = Field(default=["PSY", "PSYCH", "BHU"], description="PV1-3.1 units that mark a BH encounter")
    bh_icd10_range: tuple[str, str] = ("F01", "F99")
    part2_icd10_range: tuple[str, str] = ("F10", "F19")
    part2_services: list[str] = Field(default=["SUD", "CD"], description="PV1-10 services that are Part 2 programs")
    part2_units: list[str] = Field(default=["SUD", "CDU"], description="PV1-3.1 units that are Part 2 programs")

    ingest_max_bytes: int = Field(default=1_048_576, ge=1024)
    event_time_max_skew_s: float = Field(
        default=900.0,
        ge=0,
        description="an event, admit or discharge time further than this after the broker received the message "
        "is clamped to the receipt time and listed as a data-quality finding (a sender clock running ahead)",
    )
    http_max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="largest request body (counted while it streams, chunked too) on endpoints without their own cap",
    )
    http_max_header_bytes: int = Field(
        default=16_384, ge=1024, description="largest request line plus headers; beyond it the request is refused"
    )
    json_max_depth: int = Field(default=64, ge=8, le=500, description="deepest nesting a JSON body or cursor may have")
    json_max_int_digits: int = Field(
        default=20, ge=10, le=4000, description="longest integer literal a JSON body or cursor may carry"
    )
    dead_letter_max_bytes: int = Field(
        default=262_144, ge=1024, description="dead-letter topic copies are cut to this; rejected_events keeps all"
    )

    roster_roles: list[str] = Field(default=["DATA"], description="roles that exchange enrollee files (import, export)")
    roster_default_sender: str = Field(default="ACO", max_length=64, description="sender of a roster given none")
    roster_mappings: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named delimited-roster layouts besides `default` (app/roster/mapping.py)"
    )
    roster_max_error_ratio: float = Field(
        default=0.05, ge=0, le=1, description="a file with more bad rows than this share is rejected whole"
    )
    roster_hold_termination_ratio: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="a full snapshot terminating more than this share of the sender's active members is held for "
        "data staff to confirm (1 = never hold)",
    )
    roster_hold_min_terminations: int = Field(
        default=10, ge=1, description="a file terminating fewer members than this is never held (small lists churn)"
    )
    roster_batch_rows: int = Field(default=20_000, ge=100, description="rows staged per database round trip")
    roster_temp_buffers_mb: int = Field(
        default=512, ge=8, description="PostgreSQL temp_buffers for a roster's staging table (per importing session)"
    )
    roster_work_mem_mb: int = Field(
        default=64, ge=1, description="PostgreSQL work_mem for the reconciliation transaction (hash joins)"
    )
    roster_upload_max_bytes: int = Field(default=1_073_741_824, ge=1024, description="largest roster upload")
    inbox_schedule: list[InboxSchedule] = Field(default_factory=list, description="expected files per sender")
    inbox_poll_interval_s: float = Field(default=5.0, gt=0)
    inbox_settle_s: float = Field(
        default=2.0, ge=0, description="a file must be unchanged this long before it is taken (still uploading)"
    )
    inbox_alert_role: str = Field(default="DATA", max_length=32, description="role of missing-file alert tasks")
    worklist_page_size: int = Field(default=50, ge=1, description="worklist page size when the caller gives none")
    worklist_max_page_size: int = Field(default=500, ge=1, description="largest worklist page a caller may ask for")
    worklist_count_cap: int = Field(
        default=500, ge=0, description="worklist totals are exact up to this many tasks, else reported as capped"
    )
    fhir_task_type_system: str = Field(
        default="urn:carecoord:codesystem:task-type", description="CodeSystem of FHIR Task.code (the task type)"
    )
    fhir_user_system: str = Field(
        default="urn:carecoord:user", description="Identifier.system of FHIR Task.owner (the token's `sub`)"
    )
    host: str = "127.0.0.1"
    port: int = 8000
    worker_restart_pause_s: float = Field(
        default=1.0, gt=0, description="`serve --workers`: first pause before a dead worker is started again"
    )
    worker_restart_pause_max_s: float = Field(
        default=30.0, gt=0, description="`serve --workers`: the pause doubles per quick death up to this"
    )
    worker_quick_death_s: float = Field(
        default=30.0,
        gt=0,
        description="`serve --workers`: a worker dying sooner than this after its start died at startup",
    )
    worker_quick_deaths_max: int = Field(
        default=5, ge=1, description="`serve --workers`: consecutive quick deaths of a worker before the server exits 1"
    )
    ops_host: str = Field(default="127.0.0.1", description="bind address of the operations port")
    ops_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="`consume` and `mllp` serve /healthz, /readyz and /metrics here; unset: no HTTP port",
    )
    mllp_host: str = Field(default="127.0.0.1", description="bind address of `carecoord mllp`")
    mllp_port: int = Field(default=2575, ge=0, le=65535, description="MLLP port (2575 is registered for HL7 MLLP)")
    mllp_read_timeout_s: float = Field(
        default=60.0, gt=0, description="a started frame must be complete within this long, or the connection closes"
    )
    mllp_idle_timeout_s: float = Field(
        default=300.0, gt=0, description="close a connection that sends nothing this long between frames"
    )
    mllp_max_connections: int = Field(
        default=100, ge=1, description="concurrent MLLP connections; when full, the longest-idle one is closed"
    )
    log_level: str = "INFO"
    gc_freeze_after_startup: bool = Field(
        default=True, description="exclude the startup heap from garbage collection (app/gc_tuning.py)"
    )
    gc_gen0_threshold: int | None = Field(
        default=7000, ge=100, description="allocations between young-generation collections; unset: Python's 700"
    )

    @model_validator(mode="after")
    def _production_needs_real_infrastructure(self) -> Settings:
        if self.environment == "production":
            missing = [
                name
                for name, value in (
                    ("CARECOORD_DATABASE_URL", self.database_url),
                    ("CARECOORD_KAFKA_BOOTSTRAP_SERVERS", self.kafka_bootstrap_servers),
                    *self._missing_key_settings(),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"production requires {', '.join(missing)}")
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"CARECOORD_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} requires "
                "CARECOORD_KAFKA_SASL_USERNAME and CARECOORD_KAFKA_SASL_PASSWORD"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("mutual TLS needs both CARECOORD_KAFKA_SSL_CERTFILE and CARECOORD_KAFKA_SSL_KEYFILE")
        return self

    def _missing_key_settings(self) -> list[tuple[str, object]]:
        """Production verifies tokens with configured keys only: a secret for HS*, a JWKS for RS*/ES*."""
        needs: list[tuple[str, object]] = []
        if any(a.startswith("HS") for a in self.jwt_algorithms):
            secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
            strong = len(secret.encode()) >= self.jwt_min_secret_bytes
            needs.append((f"CARECOORD_JWT_SECRET (>= {self.jwt_min_secret_bytes} bytes)", secret if strong else None))
        if any(not a.startswith("HS") for a in self.jwt_algorithms):
            needs.append(("CARECOORD_JWT_JWKS_URL", self.jwt_jwks_url))
        return needs

    @property
    def scopes_required(self) -> bool:
        return self.environment == "production" if self.require_scopes is None else self.require_scopes

    @property
    def broker_message_max_bytes(self) -> int:
        """What one record may take on the broker: room for a message at exactly the ingest limit (or a
        dead-letter copy) plus its key, headers and record-batch framing (KAFKA_RECORD_HEADROOM_BYTES)."""
        if self.kafka_max_message_bytes is not None:
            return self.kafka_max_message_bytes
        return max(self.ingest_max_bytes, self.dead_letter_max_bytes) + KAFKA_RECORD_HEADROOM_BYTES

    @property
    def should_create_topics(self) -> bool:
        """Production topics are created deliberately (`carecoord kafka init`), never as a side effect."""
        if self.embedded_broker:
            return True  # the embedded broker starts empty every time
        return self.environment == "development" if self.kafka_create_topics is None else self.kafka_create_topics

    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.var_dir / 'carecoord.db').resolve()}"

    @property
    def should_auto_migrate(self) -> bool:
        return self.environment == "development" if self.auto_migrate is None else self.auto_migrate


@lru_cache
def get_settings() -> Settings:
    return Settings()
