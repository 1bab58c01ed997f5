"""The `sprout` command line: everything the service does, from a shell. One module per command group."""

from __future__ import annotations

import typer

from app.cli import (
    backends,
    dedup,
    export,
    finetune,
    generate,
    imports,
    items,
    jobs,
    models,
    ops,
    schedules,
    seeds,
    serve,
    users,
    worker,
)

app = typer.Typer(
    help="Sprout: grow instruction-tuning datasets from a few seed tasks.", no_args_is_help=True
)
app.command()(serve.migrate)
app.command()(serve.serve)
app.command()(worker.worker)
app.command()(ops.usage)
app.command()(ops.workers)
app.command("import-seeds")(seeds.import_seeds_command)
app.command("import-items")(imports.import_items_command)
app.command()(generate.generate)
app.command("dedup")(dedup.dedup)
app.command("export")(export.export_command)
app.add_typer(finetune.app, name="finetune")
app.add_typer(schedules.app, name="schedules")
app.command()(jobs.jobs)
app.add_typer(items.app, name="items")
app.add_typer(backends.app, name="backends")
app.add_typer(models.app, name="models")
app.add_typer(users.users, name="users")
app.add_typer(users.tokens, name="tokens")

if __name__ == "__main__":
    app()
