"""carecoord: transition-of-care tasks from hospital event feeds."""

__version__ = "0.1.0"
