"""The AMX paths of ``levant::q4_matmul`` and ``levant::q8_matmul`` (tile products, where the
CPU has AMX-INT8 and the kernel grants it) against their VNNI paths, switched with
``levant::set_amx`` in one process: the same integer dot products and the same scaling
in the same order, so the same floats, at every row count around the 16-row tiles. The
VNNI paths themselves are checked against the arithmetic written out in
test_q4_matmul.py and test_q8_matmul.py (which run the AMX paths too, where they are on).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from levant import kernels
from levant.models.quantize import GROUP_SIZE, Int8Linear, pack_q4

pytestmark = pytest.mark.skipif(
    not (kernels.q4_ready() and torch.ops.levant.amx_available()),
    reason="no AMX-INT8 here (or the kernel does not grant it)",
)

# The fewest rows for which each kernel takes its AMX path (AMX_MIN_ROWS in its .cpp).
Q4_AMX_ROWS, Q8_AMX_ROWS = 32, 8

# Around both thresholds; 16 fills one tile, 17, 33 and 70 leave a short last one; K = 96
# has an odd group count (the tile pipeline's last pass holds one group).
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
@pytest.mark.parametrize(("n", "k"), [(48, 96), (64, 576), (32, 1536)])
def test_q4_amx_gives_the_vnni_floats(rows: int, n: int, k: int) -> None:
    g = torch.Generator().manual_seed(rows * 1000 + k)
    codes = torch.randint(0, 16, (n, k), generator=g)
    d = torch.rand(n, k // GROUP_SIZE, generator=g) * 0.1
    m = -torch.rand(n, k // GROUP_SIZE, generator=g)
    packed, scales = pack_q4(codes, d, m)
    x = torch.randn(rows, k, generator=g)
    x[-1, :GROUP_SIZE] = 0  # a group of zeros in the last row
    vnni, amx = on_both(lambda: torch.ops.levant.q4_matmul(x, packed, scales), rows >= Q4_AMX_ROWS)
    assert torch.equal(vnni, amx)
    assert vnni.abs().max() > 0


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
        rows >= Q8_AMX_ROWS,
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
