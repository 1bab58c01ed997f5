"""Shared plumbing only: settings, database, errors and text hygiene. No capability lives here."""
