"""Fixtures of the drills: a PostgreSQL cluster of the test's own (tests/support/pg_cluster.py)."""

from tests.support.pg_cluster import pg_cluster  # noqa: F401 (a fixture)
