"""Levant's own C++ CPU kernels, compiled once per machine and loaded as ``torch.ops.levant``.

``load()`` compiles ``*.cpp`` in this folder with the system's C++ compiler against the
installed PyTorch (``-O3 -march=native``, ATen's OpenMP threads), caches the shared
library under ``$LEVANT_KERNEL_CACHE`` (default ``~/.cache/levant/kernels``) keyed by the
sources, the PyTorch version, the compiler and the CPU's flags, and registers the ops.
Where there is no compiler, the build fails, or ``LEVANT_KERNELS=0``, it returns False
and callers use their plain PyTorch path: the same arithmetic, slower.

Ops: ``torch.ops.levant.paged_decode_attention`` (``decode_attention.cpp``),
``torch.ops.levant.paged_prefill_attention`` (``prefill_attention.cpp``),
``torch.ops.levant.q4_matmul`` (``q4_matmul.cpp``) and ``torch.ops.levant.q8_matmul``
(``q8_matmul.cpp``), whose activations ``quantize_rows.h`` quantizes (``q4_ready()`` says
whether this CPU runs their AVX-512 VNNI or AVX2 paths), and ``torch.ops.levant.fused_step``
(``fused_step.cpp``: an engine step's decoder layers in one call, over those kernels).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.utils.cpp_extension as cpp_extension

log = logging.getLogger(__name__)

SOURCES = sorted(Path(__file__).parent.glob("*.cpp"))
HEADERS = sorted(Path(__file__).parent.glob("*.h"))
FLAGS = [
    "-O3",
    "-march=native",
    "-fopenmp",
    "-fno-math-errno",
    "-mprefer-vector-width=512",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-w",
]

_lock = threading.Lock()
_loaded: bool | None = None


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "levant" / "kernels"
    return Path(os.environ.get("LEVANT_KERNEL_CACHE", default))


def load() -> bool:
    """Whether ``torch.ops.levant`` is ready (built or taken from the cache on first call)."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load()
        return _loaded


def q4_ready() -> bool:
    """Whether ``levant::q4_matmul`` and ``levant::q8_matmul`` run their vector paths here
    (AVX-512 VNNI or AVX2; else callers keep PyTorch's kernels)."""
    return load() and bool(torch.ops.levant.q4_available())


def _load() -> bool:
    if os.environ.get("LEVANT_KERNELS", "1") == "0":
        return False
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        log.warning("no C++ compiler: Levant's CPU kernels are off (plain PyTorch paths)")
        return False
    library = cache_dir() / f"levant_kernels-{_key(compiler)}.so"
    try:
        if not library.exists():
            _build(compiler, library)
        torch.ops.load_library(str(library))  # type: ignore[no-untyped-call]
        _register_fakes()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        log.warning("Levant's CPU kernels are off (plain PyTorch paths): %s", exc)
        return False
    return True


def _key(compiler: str) -> str:
    h = hashlib.sha256()
    for source in [*SOURCES, *HEADERS]:
        h.update(source.read_bytes())
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    h.update(f"{torch.__version__}|{sys.version}|{platform.machine()}|{version}".encode())
    h.update(" ".join(FLAGS).encode())
    h.update(_cpu_flags().encode())
    return h.hexdigest()[:16]


def _cpu_flags() -> str:
    """The CPU's feature flags (what ``-march=native`` compiles for)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str, library: Path) -> None:
    library.parent.mkdir(parents=True, exist_ok=True)
    with open(library.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others reuse it
        if library.exists():
            return
        t0 = time.monotonic()
        tmp = library.with_suffix(f".{os.getpid()}.tmp")
        torch_lib = Path(torch.__file__).parent / "lib"
        abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
        cmd = [
            compiler,
            *FLAGS,
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
            *(f"-I{p}" for p in cpp_extension.include_paths()),
            *(str(s) for s in SOURCES),
            "-o",
            str(tmp),
            f"-L{torch_lib}",
            "-lc10",
            "-ltorch_cpu",
            f"-Wl,-rpath,{torch_lib}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"building {library.name} failed:\n{done.stderr[-2000:]}")
        tmp.replace(library)
        log.info("built Levant's CPU kernels in %.0f s: %s", time.monotonic() - t0, library)


def _register_fakes() -> None:
    """Shapes for ``torch.compile`` (which traces with fake tensors, not data)."""

    @torch.library.register_fake("levant::paged_decode_attention")  # type: ignore[untyped-decorator]
    def _(
        q: torch.Tensor,
        kv_cache: torch.Tensor,
        tables: torch.Tensor,
        bounds: torch.Tensor,
        block_size: int,
        scale: float,
    ) -> torch.Tensor:
        return torch.empty_like(q)

    @torch.library.register_fake("levant::paged_prefill_attention")  # type: ignore[untyped-decorator]
    def _(
        q: torch.Tensor,
        kv_cache: torch.Tensor,
        block_table: torch.Tensor,
        cached: int,
        window: int,
        block_size: int,
        scale: float,
    ) -> torch.Tensor:
        return torch.empty_like(q)

    @torch.library.register_fake("levant::q4_matmul")  # type: ignore[untyped-decorator]
    def _(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        return x.new_empty(x.shape[0], packed.shape[0] * 16)

    @torch.library.register_fake("levant::q8_matmul")  # type: ignore[untyped-decorator]
    def _(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        return x.new_empty(x.shape[0], packed.shape[0] * 16)
