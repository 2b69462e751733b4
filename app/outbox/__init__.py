"""Transactional outbox: task changes published as CloudEvents (docs/reliability.md)."""
