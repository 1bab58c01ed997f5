"""Datasets and their seed tasks: tables, seed file formats, service, router."""
