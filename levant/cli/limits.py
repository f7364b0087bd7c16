"""``levant limits``: set and list a workspace's rate, token and spend limits (audited)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

import typer

from levant.config import get_settings

limits_app = typer.Typer(help="Rate, token and spend limits per workspace.", no_args_is_help=True)


@limits_app.command("set")
def set_(
    workspace: Annotated[str | None, typer.Option(help="Workspace name or id.")] = None,
    key: Annotated[str, typer.Option(help="Key id, or * for the whole workspace.")] = "*",
    model: Annotated[str, typer.Option(help="Model id, or * for every model.")] = "*",
    rps: Annotated[float | None, typer.Option(help="Requests per second.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute.")] = None,
    tokens_per_month: Annotated[int | None, typer.Option(help="Tokens per month.")] = None,
    budget: Annotated[
        Decimal | None, typer.Option(help="Monthly spend limit in EUR (workspace-wide row).")
    ] = None,
) -> None:
    """Create or replace one limit row; options left out mean unlimited."""
    from levant.access.limits import LimitPolicy
    from levant.access.limits.workspace import set_limit
    from levant.access.startup import open_platform
    from levant.access.tenancy import find_workspace

    if budget is not None and (key != "*" or model != "*"):
        typer.echo(
            "error: a spend limit applies to the whole workspace (--key * --model *)", err=True
        )
        raise typer.Exit(1)
    try:
        policy = LimitPolicy(rps, tpm, tokens_per_month)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    budget_micros = None if budget is None else int(budget * 1_000_000)
    platform = open_platform(get_settings())
    try:
        with platform.db.writing() as session:
            ws = find_workspace(session, workspace)
            set_limit(
                session,
                ws.id,
                actor="cli",
                key_id=key,
                model=model,
                policy=policy,
                monthly_budget_micros=budget_micros,
            )
            name = ws.name
    except LookupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        platform.close()
    typer.echo(f"limits set for workspace {name} (key {key}, model {model})")


@limits_app.command("list")
def list_(
    workspace: Annotated[str | None, typer.Option(help="Workspace name or id.")] = None,
) -> None:
    """Show the stored limits of a workspace."""
    from levant.access.limits.workspace import load_rows
    from levant.access.startup import open_platform
    from levant.access.tenancy import find_workspace

    platform = open_platform(get_settings())
    try:
        with platform.db.reading() as session:
            rows = load_rows(session, find_workspace(session, workspace).id)
    except LookupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        platform.close()
    if not rows:
        typer.echo("no limits stored: the configured defaults apply")
    for r in rows:
        p = r.policy
        budget = "-" if r.monthly_budget_micros is None else f"{r.monthly_budget_micros / 1e6} EUR"
        typer.echo(
            f"key={r.key_id} model={r.model} rps={p.requests_per_second} "
            f"tpm={p.tokens_per_minute} tokens/month={p.tokens_per_month} budget={budget}"
        )
