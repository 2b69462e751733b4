"""rosters: enrollee file imports, current membership, change report; tasks without a patient (alerts)

The lead re-chains down_revision after 0002 at merge.

Revision ID: 0003_rosters
Revises: 0002_fhir_clinical
Create Date: 2026-11-24 01:58:55.343679
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0003_rosters"
down_revision: str | None = "0002_fhir_clinical"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "roster_imports",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("mapping", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("received_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("total_rows", sa.Integer(), nullable=False),
        sa.Column("error_rows", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("terminated", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("tasks_created", sa.Integer(), nullable=False),
        sa.Column("tasks_cancelled", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roster_imports")),
        sa.UniqueConstraint("sender", "checksum", name=op.f("uq_roster_imports_sender_checksum")),
    )
    with op.batch_alter_table("roster_imports", schema=None) as batch_op:
        batch_op.create_index("ix_roster_imports_sender_received", ["sender", "received_at"], unique=False)

    op.create_table(
        "roster_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("import_id", sa.Uuid(), nullable=False),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("fields", sa.String(length=500), nullable=False),
        sa.Column("previous_pcp_npi", sa.String(length=16), nullable=True),
        sa.Column("previous_practice", sa.String(length=200), nullable=True),
        sa.Column("effective_date", sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["roster_imports.id"],
            name=op.f("fk_roster_changes_import_id_roster_imports"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_roster_changes_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roster_changes")),
    )
    with op.batch_alter_table("roster_changes", schema=None) as batch_op:
        batch_op.create_index("ix_roster_changes_import_kind", ["import_id", "kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_roster_changes_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "roster_import_errors",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("import_id", sa.Uuid(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["roster_imports.id"],
            name=op.f("fk_roster_import_errors_import_id_roster_imports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roster_import_errors")),
    )
    with op.batch_alter_table("roster_import_errors", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_roster_import_errors_import_id"), ["import_id"], unique=False)

    op.create_table(
        "roster_members",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("row_hash", sa.String(length=32), nullable=False),
        sa.Column("identifier_system", sa.String(length=255), nullable=False),
        sa.Column("identifier_value", sa.String(length=255), nullable=False),
        sa.Column("medicaid_id", sa.String(length=64), nullable=True),
        sa.Column("family", sa.String(length=200), nullable=True),
        sa.Column("given", sa.String(length=200), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("sex", sa.String(length=16), nullable=True),
        sa.Column("phone", sa.String(length=64), nullable=True),
        sa.Column("address", sa.String(length=500), nullable=True),
        sa.Column("pcp_npi", sa.String(length=16), nullable=True),
        sa.Column("practice", sa.String(length=200), nullable=True),
        sa.Column("program", sa.String(length=32), nullable=True),
        sa.Column("bh_program", sa.Boolean(), nullable=False),
        sa.Column("risk_tier", sa.String(length=32), nullable=True),
        sa.Column("enrollment_start", sa.Date(), nullable=True),
        sa.Column("enrollment_end", sa.Date(), nullable=True),
        sa.Column("last_import_id", sa.Uuid(), nullable=False),
        sa.Column("participation_form_date", sa.Date(), nullable=True),
        sa.Column("comprehensive_assessment_date", sa.Date(), nullable=True),
        sa.Column("care_plan_date", sa.Date(), nullable=True),
        sa.Column("pcp_signoff_date", sa.Date(), nullable=True),
        sa.Column("last_contact_at", app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["last_import_id"], ["roster_imports.id"], name=op.f("fk_roster_members_last_import_id_roster_imports")
        ),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_roster_members_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roster_members")),
        sa.UniqueConstraint("sender", "member_id", name=op.f("uq_roster_members_sender_member_id")),
    )
    with op.batch_alter_table("roster_members", schema=None) as batch_op:
        batch_op.create_index("ix_roster_members_patient", ["patient_id"], unique=False)

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.alter_column("patient_id", existing_type=sa.Uuid(), nullable=True)


def downgrade() -> None:

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.alter_column("patient_id", existing_type=sa.Uuid(), nullable=False)

    with op.batch_alter_table("roster_members", schema=None) as batch_op:
        batch_op.drop_index("ix_roster_members_patient")

    op.drop_table("roster_members")
    with op.batch_alter_table("roster_import_errors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_roster_import_errors_import_id"))

    op.drop_table("roster_import_errors")
    with op.batch_alter_table("roster_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_roster_changes_patient_id"))
        batch_op.drop_index("ix_roster_changes_import_kind")

    op.drop_table("roster_changes")
    with op.batch_alter_table("roster_imports", schema=None) as batch_op:
        batch_op.drop_index("ix_roster_imports_sender_received")

    op.drop_table("roster_imports")
