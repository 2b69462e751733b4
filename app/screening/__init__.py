"""Behavioral-health screening: instruments, scoring and positive/negative classification (pure)."""
