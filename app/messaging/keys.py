"""Partition keys. Events for one patient share a key so they stay ordered in one partition."""

from __future__ import annotations

import hashlib


def patient_partition_key(system: str, value: str) -> bytes:
    # Hashed so broker tooling and logs never show an MRN; stable so the key never changes.
    return hashlib.sha256(f"{system}|{value}".encode()).hexdigest()[:32].encode()
