"""The one place aiokafka clients are built, so every producer, consumer and admin client connects the
same way: plaintext to the embedded broker, SASL/SCRAM and/or mutual TLS to a production cluster.

Connection security is a property of the cluster, not of a caller; a client built anywhere else would
silently fall back to plaintext the day the cluster turned SASL on.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from app.settings import Settings


@dataclass(frozen=True)
class KafkaConnection:
    """Where the cluster is and how to authenticate to it; hands out ready-configured clients."""

    bootstrap_servers: str
    client_id: str = "carecoord"
    request_timeout_ms: int = 15000
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, bootstrap_servers: str | None = None) -> KafkaConnection:
        """`bootstrap_servers` overrides the configured one (the embedded broker's port is chosen at start)."""
        bootstrap = bootstrap_servers or settings.kafka_bootstrap_servers
        if not bootstrap:
            raise ValueError("no Kafka bootstrap servers: set CARECOORD_KAFKA_BOOTSTRAP_SERVERS")
        protocol = settings.kafka_security_protocol
        return cls(
            bootstrap_servers=bootstrap,
            client_id=settings.kafka_client_id,
            request_timeout_ms=settings.kafka_request_timeout_ms,
            security_protocol=protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None,
            ssl_context=tls_context(settings) if protocol in ("SSL", "SASL_SSL") else None,
        )

    def security_options(self) -> dict[str, Any]:
        """The keyword arguments every aiokafka client takes for authentication and encryption."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.ssl_context is not None:
            options["ssl_context"] = self.ssl_context
        if self.security_protocol.startswith("SASL"):
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password,
            }
        return options

    def producer(self, **options: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=options.pop("client_id", self.client_id),
            request_timeout_ms=options.pop("request_timeout_ms", self.request_timeout_ms),
            **self.security_options(),
            **options,
        )

    def consumer(self, *topics: str, **options: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap_servers,
            client_id=options.pop("client_id", self.client_id),
            **self.security_options(),
            **options,
        )

    def admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-admin",
            request_timeout_ms=self.request_timeout_ms,
            **self.security_options(),
        )


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Server verification against the configured CA (system CAs if none); a client certificate for mTLS."""
    context = create_ssl_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
        password=settings.kafka_ssl_key_password.get_secret_value() if settings.kafka_ssl_key_password else None,
    )
    if settings.kafka_ssl_cafile is None:
        context.load_default_certs()
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context
