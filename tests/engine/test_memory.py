"""``release_freed_memory``: memory the process freed goes back to the OS (glibc's
``malloc_trim``), as the engine does after loading and tuning a model."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import pytest

from levant.engine.core import LLMEngine
from levant.engine.memory import release_freed_memory
from tests.engine.conftest import TINY, random_model

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "malloc_trim"),
    reason="needs glibc's malloc_trim",
)


def resident_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / (1 << 20)


@glibc
def test_freed_heap_memory_goes_back_to_the_os() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    release_freed_memory()
    # 256 MiB in 32 KiB blocks: under glibc's mmap threshold, so from its heap; one more
    # block above them keeps free() from shrinking the heap's top, so the freed pages stay.
    blocks = [libc.malloc(32 << 10) for _ in range(8192)]
    pin = libc.malloc(32 << 10)
    for b in blocks:
        libc.memset(b, 1, 32 << 10)  # resident
    for b in blocks:
        libc.free(b)
    held = resident_mib()
    assert release_freed_memory()
    assert resident_mib() < held - 128
    libc.free(pin)


@glibc
def test_the_engine_releases_memory_after_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr("levant.engine.core.release_freed_memory", lambda: calls.append(True))
    LLMEngine(random_model(), TINY).warm_up()
    assert calls == [True]
