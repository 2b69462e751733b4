"""HTTP API (FastAPI): health, task worklists, ingestion."""
