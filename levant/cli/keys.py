"""``levant keys create|list|revoke`` and ``levant audit verify``: administer keys from a shell.

Thin: parse options, open the platform (migrate, bootstrap), call levant.access,
print. ``keys create`` prints the new key alone on its last line so scripts can
take it with ``tail -n1``; nothing else ever prints a key.
"""

from __future__ import annotations

import getpass
import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import typer
from sqlalchemy import func, select

from levant.access import audit
from levant.access.keys import KeyInfo, KeyNotFound, create_key, list_keys, revoke_key
from levant.access.startup import Platform, PlatformSettings, open_database, open_platform
from levant.access.tenancy import WorkspaceNotFound, find_workspace, sign_in_message
from levant.db.tables import AuditEntry, Workspace
from levant.db.types import utcnow

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
audit_app = typer.Typer(help="Check the audit log.", no_args_is_help=True)

_DURATION = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _settings(ctx: typer.Context) -> PlatformSettings:
    """``ctx.obj`` when a caller (a test) supplies settings, else the process's Settings."""
    if ctx.obj is not None:
        settings: PlatformSettings = ctx.obj
        return settings
    from levant.config import get_settings

    return get_settings()


def _open(ctx: typer.Context) -> Platform:
    platform = open_platform(_settings(ctx))
    if platform.bootstrap.created:
        typer.echo(sign_in_message(platform.bootstrap), err=True)
    return platform


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def parse_expiry(value: str, now: datetime | None = None) -> datetime:
    """``30d``, ``12h``, ``90m``, ``2w``, or an ISO date/datetime (UTC unless it says otherwise)."""
    now = now or utcnow()
    if match := _DURATION.match(value.strip()):
        amount, unit = int(match.group(1)), _UNITS[match.group(2)]
        return now + timedelta(**{unit: amount})
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            moment = datetime.combine(date.fromisoformat(value.strip()), datetime.min.time())
        else:
            moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter("use a duration like 30d, 12h, 2w or an ISO date") from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment <= now:
        raise typer.BadParameter("the expiry is in the past")
    return moment


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


@keys_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", "-n", help="What the key is for.")],
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", "-w", help="Workspace name or id (default: default)."),
    ] = None,
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated model ids (default: all).")
    ] = None,
    endpoints: Annotated[
        str | None, typer.Option("--endpoints", help="Comma-separated endpoints (default: all).")
    ] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help="30d, 12h, 2w or an ISO date (default: never).")
    ] = None,
) -> None:
    """Create an API key and print it once, alone on the last line."""
    expires_at = parse_expiry(expires) if expires else None
    platform = _open(ctx)
    try:
        with platform.db.writing() as session:
            ws = find_workspace(session, workspace)
            created = create_key(
                session,
                platform.secret,
                workspace_id=ws.id,
                name=name,
                actor=_actor(),
                allowed_models=_split(models),
                allowed_endpoints=_split(endpoints),
                expires_at=expires_at,
            )
            ws_label = f"{ws.name} ({ws.id})"
    except WorkspaceNotFound as exc:
        raise _fail(str(exc)) from None
    finally:
        platform.close()
    info = created.info
    typer.echo(f"Created key {info.id} ({info.display}) in workspace {ws_label}.")
    if info.expires_at is not None:
        typer.echo(f"It expires at {info.expires_at.isoformat()}.")
    typer.echo("This is the only time the key is shown:")
    typer.echo(created.key)


@keys_app.command("list")
def list_(
    ctx: typer.Context,
    workspace: Annotated[
        str | None, typer.Option("--workspace", "-w", help="Only this workspace (name or id).")
    ] = None,
) -> None:
    """List keys (never the keys themselves: their ids and display prefixes)."""
    platform = _open(ctx)
    try:
        with platform.db.reading() as session:
            names = {ws.id: ws.name for ws in session.scalars(select(Workspace))}
            ws_id = find_workspace(session, workspace).id if workspace else None
            infos = list_keys(session, ws_id)
    except WorkspaceNotFound as exc:
        raise _fail(str(exc)) from None
    finally:
        platform.close()
    typer.echo(_table(infos, names))


@keys_app.command("revoke")
def revoke(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id.")]
) -> None:
    """Revoke a key: requests with it are refused from now on."""
    platform = _open(ctx)
    try:
        with platform.db.writing() as session:
            info = revoke_key(session, key_id, actor=_actor())
    except KeyNotFound:
        raise _fail(f"no key with id {key_id!r}") from None
    finally:
        platform.close()
    assert info.revoked_at is not None
    typer.echo(f"Revoked {info.id} ({info.display}) at {info.revoked_at.isoformat()}.")


@audit_app.command("verify")
def verify(ctx: typer.Context) -> None:
    """Recompute the audit hash chain; exit 1 and name the rows if anything was altered."""
    db = open_database(_settings(ctx))
    try:
        with db.reading() as session:
            problems = audit.verify(session)
            count = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
    finally:
        db.dispose()
    if problems:
        for problem in problems:
            typer.echo(f"audit log: {problem}", err=True)
        typer.echo(f"audit log FAILED verification: first bad row is seq {problems[0].seq}")
        raise typer.Exit(1)
    typer.echo(f"audit log OK: {count} rows, hash chain intact.")


def _table(infos: list[KeyInfo], workspace_names: dict[str, str]) -> str:
    now = utcnow()
    header = ("ID", "WORKSPACE", "NAME", "KEY", "STATUS", "EXPIRES", "LAST USED", "MODELS")
    rows: list[tuple[str, ...]] = [header]
    for info in infos:
        rows.append(
            (
                info.id,
                workspace_names.get(info.workspace_id, info.workspace_id),
                info.name,
                info.display,
                info.status(now),
                _when(info.expires_at),
                _when(info.last_used_at),
                ",".join(info.allowed_models) if info.allowed_models is not None else "*",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if isinstance(moment, datetime) else "-"
