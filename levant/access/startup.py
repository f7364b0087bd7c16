"""Start-up of the provider platform: database at head, server secret, first-start bootstrap.

``open_platform(settings)`` is what ``levant serve`` and the admin commands call
first. It reads only the Settings fields it is given (``home``,
``database_url``, ``secret``) and prints nothing; callers show
``sign_in_message`` when ``bootstrap.created`` is true.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from levant.access.secret import load_secret
from levant.access.tenancy import BootstrapResult, bootstrap
from levant.db.engine import resolve_url
from levant.db.migrate import upgrade
from levant.db.session import Database


class PlatformSettings(Protocol):
    @property
    def home(self) -> Path: ...


@dataclass
class Platform:
    db: Database
    secret: bytes
    bootstrap: BootstrapResult

    def close(self) -> None:
        self.db.dispose()


def database_url(settings: PlatformSettings) -> str | None:
    value = getattr(settings, "database_url", None)
    return str(value) if value else None


def configured_secret(settings: PlatformSettings) -> str | None:
    value = getattr(settings, "secret", None)
    if value is not None and hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return str(value) if value else None


def open_database(settings: PlatformSettings) -> Database:
    """The database at ``LEVANT_DATABASE_URL`` (or SQLite in home), migrated to head."""
    db = Database.from_url(resolve_url(settings.home, database_url(settings)))
    upgrade(db.engine)
    return db


def open_platform(settings: PlatformSettings) -> Platform:
    db = open_database(settings)
    try:
        secret = load_secret(settings.home, configured_secret(settings))
        with db.writing() as session:
            result = bootstrap(session, settings.home, secret)
    except BaseException:
        db.dispose()
        raise
    return Platform(db=db, secret=secret, bootstrap=result)
