"""``levant grants``: give a workspace access to commercial-track models (audited)."""

from __future__ import annotations

from typing import Annotated

import typer

from levant.config import get_settings

grants_app = typer.Typer(
    help="Grant workspaces access to commercial-track models.", no_args_is_help=True
)


def _change(model: str, workspace: str | None, *, add: bool) -> None:
    from levant.access.policy import grant, revoke_grant
    from levant.access.startup import open_platform
    from levant.access.tenancy import find_workspace
    from levant.catalog.catalog import ModelNotFound, load_catalog

    settings = get_settings()
    try:
        card = load_catalog(settings).get(model)
    except ModelNotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if card.track != "commercial":
        typer.echo(f"error: '{card.id}' is an open model; every workspace may use it", err=True)
        raise typer.Exit(1)
    platform = open_platform(settings)
    try:
        with platform.db.writing() as session:
            ws = find_workspace(session, workspace)
            changed = (grant if add else revoke_grant)(session, ws.id, card.id, actor="cli")
            name = ws.name
    except LookupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        platform.close()
    verb = (
        ("granted to" if add else "revoked from")
        if changed
        else ("was already granted to" if add else "was not granted to")
    )
    typer.echo(f"{card.id} {verb} workspace {name}")


@grants_app.command("add")
def add(
    model: Annotated[str, typer.Argument(help="Commercial model id.")],
    workspace: Annotated[str | None, typer.Option(help="Workspace name or id.")] = None,
) -> None:
    """Let a workspace use a commercial model."""
    _change(model, workspace, add=True)


@grants_app.command("remove")
def remove(
    model: Annotated[str, typer.Argument(help="Commercial model id.")],
    workspace: Annotated[str | None, typer.Option(help="Workspace name or id.")] = None,
) -> None:
    """Take a commercial model away from a workspace."""
    _change(model, workspace, add=False)
