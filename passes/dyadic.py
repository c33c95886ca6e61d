"""Dyadic rescaling (HAWQ-V3): a real scale s > 0 becomes b / 2^c with integers, applied in int64.

Not a pass: the numerics every integer-lowering pass and the numpy reference share, so that they agree bit
for bit. Numerics:

    m, e = frexp(s)                  s = m * 2^e, m in [0.5, 1)
    b    = floor(m * 2^31 + 1/2)     round half up; b = 2^31 renormalises to 2^30 with e + 1
    c    = 31 - e
    y    = (acc * b + 2^(c-1)) >> c  int64, arithmetic shift: round half up of acc * s
    q    = clamp(y + zero_point, qmin, qmax)

This is the convention of TVM's former QNN requantize (UPWARD rounding). ``c`` must lie in [1, 63]: a scale
below 2^-32 keeps fewer mantissa bits (b is shifted right, rounding half up) so that c = 63; a scale of 2^30
or more has no dyadic form here and is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MULTIPLIER_BITS = 31  # b < 2^31: fits a signed int32
MAX_SHIFT = 63        # (acc * b + 2^(c-1)) must stay inside int64
ACCUMULATOR_BITS = 32  # acc is an int32 sum of products


class DyadicError(ValueError):
    """A scale has no dyadic form within the named bit widths."""


@dataclass(frozen=True)
class Dyadic:
    """The integers of s ~= b / 2^c."""

    b: int
    c: int

    @property
    def value(self) -> float:
        return self.b / 2.0**self.c


def dyadic(scale: float) -> Dyadic:
    """The dyadic number b / 2^c closest to ``scale`` with b < 2^31 and 1 <= c <= 63."""
    if not (math.isfinite(scale) and scale > 0):
        raise DyadicError(f"a rescale factor must be finite and > 0, got {scale!r}")
    mantissa, exponent = math.frexp(scale)
    b = math.floor(mantissa * 2**MULTIPLIER_BITS + 0.5)
    if b == 2**MULTIPLIER_BITS:  # rounding carried into the next power of two
        b, exponent = b >> 1, exponent + 1
    c = MULTIPLIER_BITS - exponent
    if c < 1:
        raise DyadicError(f"rescale factor {scale!r} >= 2^30 has no dyadic form with c >= 1")
    if c > MAX_SHIFT:
        drop = c - MAX_SHIFT
        b, c = (b + (1 << (drop - 1))) >> drop, MAX_SHIFT
        if b == 0:
            return Dyadic(0, MAX_SHIFT)
    return Dyadic(int(b), int(c))


def rescale(acc: np.ndarray, d: Dyadic) -> np.ndarray:
    """Round-half-up of ``acc * b / 2^c`` in int64 (``acc`` holds int32 values)."""
    acc = np.asarray(acc, dtype=np.int64)
    return (acc * np.int64(d.b) + np.int64(1 << (d.c - 1))) >> np.int64(d.c)


def requantize(acc: np.ndarray, d: Dyadic, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    """``clamp(rescale(acc) + zero_point, qmin, qmax)`` as int64 (the caller narrows the dtype)."""
    return np.clip(rescale(acc, d) + np.int64(zero_point), qmin, qmax)
