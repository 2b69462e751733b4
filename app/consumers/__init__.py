"""Inbound adapters: Kafka consumers, HL7 v2 decoding, dead letters."""
