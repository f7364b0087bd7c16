"""The server secret that API keys are hashed under (HMAC-SHA256).

Taken from LEVANT_SECRET when the operator sets one, otherwise created once in
``<home>/secret`` (mode 0600) and read from there ever after. Losing it makes
every issued key unusable; that is the point of keeping it out of the database.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

SECRET_FILE = "secret"
MIN_SECRET_CHARS = 32


class SecretError(RuntimeError):
    pass


def load_secret(home: Path, configured: str | None = None) -> bytes:
    """The secret as bytes: ``configured`` (LEVANT_SECRET) if given, else the home file."""
    if configured is not None:
        if len(configured) < MIN_SECRET_CHARS:
            raise SecretError(f"LEVANT_SECRET must be at least {MIN_SECRET_CHARS} characters")
        return configured.encode()
    path = home / SECRET_FILE
    if not path.exists():
        _create(path)
    return _read(path)


def _create(path: Path) -> None:
    """Write a new secret; if another process wins the race, theirs is kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        # link() fails if the name exists, so the file appears whole or not at all.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"{path} is readable by others; run: chmod 600 {path}")
    text = path.read_text().strip()
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise SecretError(f"{path} does not hold a hex secret") from None
    if len(value) < 16:
        raise SecretError(f"{path} holds a secret shorter than 16 bytes")
    return value
