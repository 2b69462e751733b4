"""FHIR clinical ingestion: stored resources, the Questionnaire registry, screening events

Revision ID: 0002_fhir_clinical
Revises: 0001
Create Date: 2026-11-24 02:01:55.482594
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0002_fhir_clinical"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fhir_resources",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=False),
        sa.Column("identity_hash", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("awaiting_questionnaire", sa.String(length=512), nullable=True),
        sa.Column("effective_at", app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_fhir_resources_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fhir_resources")),
        sa.UniqueConstraint(
            "resource_type", "identity_hash", name=op.f("uq_fhir_resources_resource_type_identity_hash")
        ),
    )
    with op.batch_alter_table("fhir_resources", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fhir_resources_awaiting_questionnaire"), ["awaiting_questionnaire"], unique=False
        )
        batch_op.create_index(
            "ix_fhir_resources_patient_type_code", ["patient_id", "resource_type", "code"], unique=False
        )

    op.create_table(
        "questionnaires",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("resource_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("instrument", sa.String(length=16), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_id"], ["fhir_resources.id"], name=op.f("fk_questionnaires_resource_id_fhir_resources")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_questionnaires")),
        sa.UniqueConstraint("url", "version", name=op.f("uq_questionnaires_url_version")),
    )
    op.create_table(
        "screening_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("instrument", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("item9_score", sa.Integer(), nullable=True),
        sa.Column("positive", sa.Boolean(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("score_computed", sa.Boolean(), nullable=False),
        sa.Column("effective_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source_type", sa.String(length=32), nullable=False),
        sa.Column("source_id", sa.Uuid(), nullable=False),
        sa.Column("source_version", sa.Integer(), nullable=False),
        sa.Column("recorded_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_screening_events_patient_id_patients")),
        sa.ForeignKeyConstraint(
            ["source_id"], ["fhir_resources.id"], name=op.f("fk_screening_events_source_id_fhir_resources")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_events")),
        sa.UniqueConstraint("source_id", name=op.f("uq_screening_events_source_id")),
    )
    with op.batch_alter_table("screening_events", schema=None) as batch_op:
        batch_op.create_index("ix_screening_events_patient_effective", ["patient_id", "effective_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("screening_events", schema=None) as batch_op:
        batch_op.drop_index("ix_screening_events_patient_effective")

    op.drop_table("screening_events")
    op.drop_table("questionnaires")
    with op.batch_alter_table("fhir_resources", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_resources_patient_type_code")
        batch_op.drop_index(batch_op.f("ix_fhir_resources_awaiting_questionnaire"))

    op.drop_table("fhir_resources")
