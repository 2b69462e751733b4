"""Inbound front doors (HTTP, MLLP) that validate a message and publish it to Kafka."""
