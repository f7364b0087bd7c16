"""The server secret: created once, 0600, stable; LEVANT_SECRET wins when set."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from levant.access.secret import SECRET_FILE, SecretError, load_secret


def test_created_once_with_mode_0600_and_then_reused(tmp_path: Path) -> None:
    first = load_secret(tmp_path)
    path = tmp_path / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 32
    assert load_secret(tmp_path) == first
    assert not [p for p in tmp_path.iterdir() if p.name != SECRET_FILE]


def test_configured_secret_is_used_and_no_file_is_written(tmp_path: Path) -> None:
    value = "x" * 40
    assert load_secret(tmp_path, value) == value.encode()
    assert not (tmp_path / SECRET_FILE).exists()


def test_short_configured_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="at least"):
        load_secret(tmp_path, "short")


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    load_secret(tmp_path)
    (tmp_path / SECRET_FILE).chmod(0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_secret(tmp_path)
