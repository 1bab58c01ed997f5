"""Durable jobs and cron schedules (arrive with [6/7]); the in-process worker lives here."""
