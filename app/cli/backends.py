"""`sprout backends list|check`: the configured backends a job may name, and whether they answer."""

from __future__ import annotations

import asyncio
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from app.cli.common import console, fail
from app.core.config import get_settings
from app.llm.registry import BackendRegistry, UnknownBackendError

app = typer.Typer(help="The configured LLM backends.", no_args_is_help=True)


@app.command("list")
def list_backends() -> None:
    """Names, kinds, models, replicas and concurrency (never URLs or keys)."""
    settings = get_settings()
    table = Table()
    for column in ("name", "kind", "model", "mode", "replicas", "in flight", "default"):
        table.add_column(column)
    for name, backend in sorted(settings.backends.items()):
        default = "yes" if name == settings.default_backend else ""
        replicas = len(backend.replica_urls) or 1
        values = (name, backend.kind, backend.model, backend.mode, replicas, backend.in_flight, default)
        table.add_row(*(Text(str(v)) for v in values))
    console.print(table)


@app.command("check")
def check(
    name: Annotated[Optional[str], typer.Argument(help="A backend name; default: all.")] = None,
) -> None:  # noqa: UP045
    """Ask each backend whether it can answer (an HTTP backend: is a server up and serving the model; with
    several replicas, each one's answer too)."""
    settings = get_settings()
    registry = BackendRegistry.from_settings(settings)
    names = [name] if name else registry.names
    try:
        results = asyncio.run(_check(registry, names))
    except UnknownBackendError as exc:
        raise fail(exc.message) from exc
    bad = False
    for backend_name, result in results:
        ok = bool(result.get("ok"))
        bad = bad or not ok
        replicas = result.get("replicas")
        several = isinstance(replicas, list) and len(replicas) > 1
        if several:  # a summary line, then each server behind the name with its own answer
            serving = sum(1 for r in replicas if r.get("ok"))
            summary = f"{serving} of {len(replicas)} replicas serve the model"
        else:
            summary = str(result.get("error", ""))
        console.print(
            Text.assemble(
                (f"{'ok ' if ok else 'FAIL'} ", "green" if ok else "red"),
                backend_name,
                " ",
                summary,
            )
        )
        if several:
            for replica in replicas:
                up = bool(replica.get("ok"))
                rotation = "" if replica.get("in_rotation", True) else " (out of rotation)"
                console.print(
                    Text.assemble(
                        ("  ok   " if up else "  FAIL ", "green" if up else "red"),
                        str(replica.get("replica", "?")),
                        rotation,
                        " ",
                        str(replica.get("error", "")),
                    )
                )
    if bad:
        raise typer.Exit(1)


async def _check(registry: BackendRegistry, names: list[str]) -> list[tuple[str, dict[str, object]]]:
    try:
        return [(n, await (await registry.get(n)).health()) for n in names]
    finally:
        await registry.aclose()
