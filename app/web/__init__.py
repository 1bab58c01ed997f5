"""Reviewer UI (arrives with [4/8])."""
