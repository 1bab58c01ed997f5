"""Sprout: grow instruction-tuning datasets from a few seed tasks."""

__version__ = "0.1.0"
