"""``levant residency``: where a workspace's requests may be served, and its retention mode."""

from __future__ import annotations

from typing import Annotated

import typer

from levant.config import get_settings

residency_app = typer.Typer(
    help="Set or show a workspace's data-residency policy.", no_args_is_help=True
)


@residency_app.command("set")
def set_(
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            help="Region or jurisdiction (EU, EEA, CH, US, eu-west-paris …); repeatable. "
            "Omit to allow any region.",
        ),
    ] = None,
    retention: Annotated[
        str, typer.Option(help="standard, or zero: no prompt or completion text is stored.")
    ] = "standard",
    workspace: Annotated[str | None, typer.Option(help="Workspace name or id.")] = None,
) -> None:
    """Store the policy; every later request of the workspace is routed inside it."""
    from levant.access.policy import set_residency
    from levant.access.startup import open_platform
    from levant.access.tenancy import find_workspace
    from levant.routing import PolicyError

    platform = open_platform(get_settings())
    try:
        with platform.db.writing() as session:
            ws = find_workspace(session, workspace)
            policy = set_residency(session, ws.id, allow, retention, actor="cli")
            name = ws.name
    except (LookupError, PolicyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        platform.close()
    typer.echo(f"workspace {name}: {policy.describe()}")


@residency_app.command("show")
def show(
    workspace: Annotated[str | None, typer.Option(help="Workspace name or id.")] = None,
) -> None:
    """Print the policy in force."""
    from levant.access.policy import workspace_residency
    from levant.access.startup import open_platform
    from levant.access.tenancy import find_workspace

    platform = open_platform(get_settings())
    try:
        with platform.db.reading() as session:
            ws = find_workspace(session, workspace)
            policy = workspace_residency(session, ws.id)
            name = ws.name
    except LookupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        platform.close()
    typer.echo(f"workspace {name}: {policy.describe()}")
