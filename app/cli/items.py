"""`sprout items list`."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from app.cli.common import console, fail, sessions_for
from app.core.config import get_settings
from app.core.errors import InvalidFieldError, NotFoundError
from app.datasets.service import get_dataset_by_name
from app.generation import item_query
from app.generation.models import ItemStatus

app = typer.Typer(help="Look at generated items.", no_args_is_help=True)


@app.command("list")
def items_list(
    dataset: Annotated[str, typer.Option("--dataset", "-d")] = "default",
    status: Annotated[
        Optional[ItemStatus], typer.Option(help="pending, approved, rejected, disputed or filtered.")
    ] = None,  # noqa: UP045
    reason: Annotated[Optional[str], typer.Option(help="Only items filtered for this reason.")] = None,  # noqa: UP045
    language: Annotated[Optional[str], typer.Option(help="zh, ja, ko, latin, mixed or other.")] = None,  # noqa: UP045
    search: Annotated[Optional[str], typer.Option("--search", "-q", help="Text in any field.")] = None,  # noqa: UP045
    sort: Annotated[str, typer.Option(help="oldest, newest or doubtful.")] = "oldest",
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    cursor: Annotated[
        Optional[str], typer.Option(help="Continue after a listing (its printed cursor).")
    ] = None,  # noqa: UP045
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List items of a dataset."""
    sessions = sessions_for(get_settings())
    with sessions() as session:
        try:
            dataset_id = get_dataset_by_name(session, dataset).id
        except NotFoundError as exc:
            raise fail(str(exc)) from exc
        if sort not in item_query.SORTS:
            raise fail(f"--sort: one of {', '.join(item_query.SORTS)}")
        query = item_query.ItemQuery(status=status, filter_reason=reason, language=language, text=search)
        try:
            rows, next_cursor = item_query.page(
                session, dataset_id, query, sort=sort, cursor=cursor, limit=limit
            )  # type: ignore[arg-type]
        except InvalidFieldError as exc:
            raise fail(exc.message) from exc
    if as_json:
        for item in rows:
            record = {k: getattr(item, k) for k in ("id", "instruction", "input", "output", "filter_reason")}
            record["status"] = item.status.value
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    table = Table(title=Text(f"{dataset}: {len(rows)} items"))
    for column in ("id", "status", "instruction", "input", "output", "reason"):
        table.add_column(column, overflow="fold")
    for item in rows:
        reason_text = item.filter_reason or ""
        if item.duplicate_signal:
            reason_text += f" ({item.duplicate_signal} {item.nearest_rouge_l or 0:.2f})"
        # Model output is untrusted: Text() shows it verbatim, never as rich markup.
        cells = (item.instruction, item.input, item.output, reason_text)
        table.add_row(str(item.id), item.status.value, *(Text(c) for c in cells))
    console.print(table)
    if next_cursor:
        console.print(Text(f"more: --cursor {next_cursor}"))
