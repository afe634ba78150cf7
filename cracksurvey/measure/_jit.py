"""How the width's compiled kernels are built (numba).

Floating-point reassociation, contraction into fused multiply-adds, reciprocal division and
signless zeros are allowed (``fastmath`` without ``nnan``/``ninf``: the kernels test for NaN
and infinity, and those tests must stay). On a cracked façade this makes the width about 13 %
faster (docs/performance.md, "Crack width from the image"); the widths change only in the
last bits of a double, and the synthetic width benchmark reads the same to the third decimal.
"""

from __future__ import annotations

from typing import Any

from numba import njit

#: LLVM fast-math flags of the width kernels (not ``nnan`` / ``ninf``: NaN tests must stay).
FASTMATH = frozenset({"contract", "reassoc", "arcp", "nsz"})


def kernel(**options: Any) -> Any:
    """``numba.njit`` for a width kernel: cached beside the module, :data:`FASTMATH`."""
    return njit(cache=True, fastmath=set(FASTMATH), **options)
