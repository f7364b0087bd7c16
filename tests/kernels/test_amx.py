"""The AMX path of ``levant::q8_matmul`` (tile products, where the CPU has AMX-INT8 and the
kernel grants it) against its VNNI path, switched with ``levant::set_amx`` in one
process: the same integer dot products and the same scaling in the same order, so the
same floats, at every row count around the 16-row tiles and the path's bounds. The VNNI
path itself is checked against the arithmetic written out in test_q8_matmul.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from levant import kernels
from levant.models.quantize import Int8Linear

pytestmark = pytest.mark.skipif(
    not (kernels.q4_ready() and torch.ops.levant.amx_available()),
    reason="no AMX-INT8 here (or the kernel does not grant it)",
)

# The rows for which q8_matmul takes its AMX path (AMX_MIN_ROWS, AMX_MAX_ROWS).
AMX_ROWS = range(8, 33)

# Around both bounds; 16 fills one tile, 17 and 31 leave a short last one; K = 96 has an
# odd group count (the tile pipeline's last pass holds one group).
ROWS = [1, 7, 8, 9, 16, 17, 31, 32, 33, 70]


@pytest.fixture
def both_paths() -> Iterator[None]:
    previous = torch.ops.levant.set_amx(True)
    yield
    torch.ops.levant.set_amx(previous)


def on_both(f, takes_amx: bool):  # type: ignore[no-untyped-def]
    """f() on the VNNI path, then with AMX on (where f takes the AMX path if takes_amx)."""
    op = torch.ops.levant
    op.set_amx(False)
    before = op.amx_matmuls()
    vnni = f()
    assert op.amx_matmuls() == before
    op.set_amx(True)
    amx = f()
    assert op.amx_matmuls() == before + takes_amx
    return vnni, amx


@pytest.mark.usefixtures("both_paths")
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize(("n", "k"), [(48, 96), (256, 576)])
def test_q8_amx_gives_the_vnni_floats(rows: int, n: int, k: int) -> None:
    g = torch.Generator().manual_seed(rows * 1000 + k + 1)
    layer = Int8Linear(torch.randn(n, k, generator=g) * 0.02)
    assert layer.q8_packed is not None and layer.q8_scales is not None
    x = torch.randn(rows, k, generator=g) * 3
    vnni, amx = on_both(
        lambda: torch.ops.levant.q8_matmul(x, layer.q8_packed, layer.q8_scales),
        rows in AMX_ROWS,
    )
    assert torch.equal(vnni, amx)
    assert vnni.abs().max() > 0


def test_the_switch_reports_and_restores() -> None:
    op = torch.ops.levant
    previous = op.set_amx(False)
    try:
        assert op.set_amx(True) is False
        assert op.set_amx(True) is True  # on, where granted (it is, here)
    finally:
        op.set_amx(previous)
