"""Relational state: models, engine/session factory and the portable column types they need."""
