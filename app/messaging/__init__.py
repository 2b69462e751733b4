"""Kafka plumbing: producer, topic admin, the embedded broker for one-machine runs."""
