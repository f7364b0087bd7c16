"""``levant pull`` and ``levant models``: fill the model store and show the catalogue.

Thin: lookups, pulls and store state come from ``levant.catalog``; this module
only parses arguments, draws the progress bar and table, and maps errors to exit 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from levant.catalog.card import LocalSource, ModelCard, Source
from levant.catalog.catalog import CatalogError, ModelNotFound, load_catalog
from levant.catalog.progress import RichProgress
from levant.catalog.pull import pull as pull_model
from levant.catalog.sources import SourceUnavailable
from levant.catalog.store import ModelStore
from levant.cli import app
from levant.config import get_settings


@app.command()
def pull(
    model: Annotated[str, typer.Argument(help="Model id or alias from `levant models`.")],
    from_path: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A local file or directory to take the weights from first (checked by sha256).",
        ),
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Re-hash an existing copy and repair it.")
    ] = False,
) -> None:
    """Download a model's weights into the local store (verified by sha256)."""
    settings = get_settings()
    try:
        card = load_catalog(settings).get(model)
        extra: list[Source] = [LocalSource(path=str(from_path))] if from_path else []
        with RichProgress(Console(stderr=True)) as progress:
            path = pull_model(
                card, ModelStore(settings), extra_sources=extra, progress=progress, verify=verify
            )
    except (ModelNotFound, CatalogError, SourceUnavailable) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{card.id} is ready in {path}")


@app.command()
def models() -> None:
    """List the catalogue: what can be pulled and what already is."""
    settings = get_settings()
    try:
        catalog = load_catalog(settings)
    except CatalogError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    store = ModelStore(settings)
    table = Table("id", "track", "licence", "context", "format", "size", "pulled")
    for card in catalog.cards():
        table.add_row(
            card.id,
            card.track,
            card.licence,
            str(card.max_context_length),
            card.format,
            _size(card),
            "yes" if store.is_pulled(card) else "no",
        )
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
        console = Console(width=120)
    console.print(table)


def _size(card: ModelCard) -> str:
    if not card.files:  # API-only models have no weights
        return "-"
    size = float(sum(f.size for f in card.files))
    if size < 1000:
        return f"{size:.0f} B"
    for unit in ("kB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            break
    return f"{size:.1f} {unit}"


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="Model id or alias of an open-weight model.")],
    dest: Annotated[Path, typer.Argument(help="Directory to write the weights into.")],
) -> None:
    """Copy an open-weight model's files out of the store, with its licence and checksums."""
    from levant.access.policy import NotExportable
    from levant.catalog.export import NotPulled
    from levant.catalog.export import export as export_model

    settings = get_settings()
    try:
        card = load_catalog(settings).get(model)
        written = export_model(card, ModelStore(settings), dest)
    except (ModelNotFound, CatalogError, NotExportable, NotPulled) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for path in written:
        typer.echo(str(path))
