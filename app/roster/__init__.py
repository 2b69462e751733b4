"""Enrollee files (ACO <-> Community Partner): parsing, reconciliation policy, exports. Pure: no I/O."""
