"""Production Kafka security settings reach every client the factory builds; bad combinations are refused."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from app.messaging.kafka_clients import KafkaConnection
from app.messaging.topics import min_insync_replicas, topic_specs
from app.settings import Settings

PRODUCTION = {
    "environment": "production",
    "database_url": "postgresql+asyncpg://u@db/carecoord",
    "kafka_bootstrap_servers": "kafka-0:9093,kafka-1:9093",
    "jwt_secret": "s" * 40,
}


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "carecoord")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "client.crt", tmp_path / "client.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_plaintext_by_default() -> None:
    kafka = KafkaConnection.from_settings(Settings(kafka_bootstrap_servers="127.0.0.1:9092"))
    assert kafka.security_options() == {"security_protocol": "PLAINTEXT"}


async def test_sasl_scram_over_tls_reaches_producer_consumer_and_admin(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    settings = Settings(
        **PRODUCTION,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="carecoord",
        kafka_sasl_password="scram-secret",
        kafka_ssl_cafile=cert,
    )
    kafka = KafkaConnection.from_settings(settings)
    assert "scram-secret" not in repr(kafka)
    producer, consumer, admin = kafka.producer(), kafka.consumer("t", group_id="g"), kafka.admin()
    for client in (producer.client, consumer._client, admin._client):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-256"
        assert client._sasl_plain_username == "carecoord"
        assert client._sasl_plain_password == "scram-secret"
        assert isinstance(client._ssl_context, ssl.SSLContext)
        assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED and client._ssl_context.check_hostname


def test_mutual_tls_loads_the_client_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = Settings(
        **PRODUCTION,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=cert,
        kafka_ssl_certfile=cert,
        kafka_ssl_keyfile=key,
    )
    kafka = KafkaConnection.from_settings(settings)
    assert kafka.security_options()["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in kafka.security_options()
    assert kafka.ssl_context is not None and kafka.ssl_context.cert_store_stats()["x509"] == 1


def test_a_missing_key_file_fails_at_start_not_at_first_connect(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    settings = Settings(
        **PRODUCTION,
        kafka_security_protocol="SSL",
        kafka_ssl_certfile=cert,
        kafka_ssl_keyfile=tmp_path / "missing.key",
    )
    with pytest.raises(OSError):
        KafkaConnection.from_settings(settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "CARECOORD_KAFKA_SASL_USERNAME"),
        ({"kafka_ssl_certfile": "/etc/c.crt"}, "CARECOORD_KAFKA_SSL_KEYFILE"),
    ],
)
def test_incomplete_security_settings_are_refused(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**PRODUCTION, **overrides)


def test_production_creates_no_topics_on_start_development_does() -> None:
    assert not Settings(**PRODUCTION).should_create_topics
    assert Settings(**PRODUCTION, kafka_create_topics=True).should_create_topics
    assert Settings(kafka_bootstrap_servers="127.0.0.1:9092").should_create_topics
    assert Settings(kafka_create_topics=False).should_create_topics  # the embedded broker starts empty


def test_topic_specs_cover_inputs_dead_letters_and_task_events() -> None:
    settings = Settings(kafka_partitions=12, kafka_dead_letter_partitions=2, kafka_replication_factor=3)
    specs = {s.name: s for s in topic_specs(settings)}
    assert set(specs) == set(settings.topics.model_dump().values())
    assert specs["carecoord.task-events.v1"].partitions == settings.kafka_task_events_partitions
    assert specs["carecoord.adt.v1"].partitions == 12 and specs["carecoord.adt.dlq.v1"].partitions == 2
    assert min_insync_replicas(settings) == 2
    assert specs["carecoord.adt.v1"].configs(2)["min.insync.replicas"] == "2"
