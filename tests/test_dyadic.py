"""Dyadic rescaling: exact against rational arithmetic on edge values of scale and accumulator."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from passes.dyadic import Dyadic, DyadicError, dyadic, requantize, rescale

INT32 = np.iinfo(np.int32)
EDGE_ACCUMULATORS = np.array([INT32.min, INT32.min + 1, -(2**30), -3, -2, -1, 0, 1, 2, 3, 2**30, INT32.max - 1,
                              INT32.max], dtype=np.int64)


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25, 1 / 3, 0.1, 1e-3, 2.0**-20, 0.999999999, 1.5, 255.0, 2.0**29])
def test_multiplier_is_31_bit_and_close(scale):
    d = dyadic(scale)
    assert 2**30 <= d.b < 2**31 and 1 <= d.c <= 63
    assert abs(d.value - scale) <= scale * 2.0**-30


def test_rounding_that_carries_renormalises():
    d = dyadic(math.nextafter(1.0, 0.0))  # m * 2^31 rounds up to exactly 2^31
    assert d == Dyadic(2**30, 30)


@pytest.mark.parametrize("scale", [2.0**-40, 3.7e-15, 2.0**-62])
def test_tiny_scales_keep_shift_at_63(scale):
    d = dyadic(scale)
    assert d.c == 63 and 0 < d.b < 2**31
    assert abs(d.value - scale) <= 2.0**-63


def test_vanishing_scale_rescales_everything_to_zero():
    assert dyadic(2.0**-70) == Dyadic(0, 63)
    assert (rescale(EDGE_ACCUMULATORS, dyadic(2.0**-70)) == 0).all()


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf"), 2.0**30, 1e12])
def test_scales_without_dyadic_form_are_refused(bad):
    with pytest.raises(DyadicError):
        dyadic(bad)


@pytest.mark.parametrize("scale", [1.0, 0.5, 1 / 3, 0.0123456, 2.0**-31, 7.25, 2.0**-50])
def test_rescale_equals_exact_round_half_up_on_edge_accumulators(scale):
    d = dyadic(scale)
    rng = np.random.default_rng(0)
    accs = np.concatenate([EDGE_ACCUMULATORS, rng.integers(INT32.min, INT32.max, 2000, dtype=np.int64, endpoint=True)])
    expected = [_round_half_up(Fraction(int(a) * d.b, 2**d.c)) for a in accs]
    assert rescale(accs, d).tolist() == expected


def test_ties_round_up_for_both_signs():
    half = Dyadic(1 << 30, 31)  # exactly 0.5
    assert rescale(np.array([-3, -1, 1, 3]), half).tolist() == [-1, 0, 1, 2]


def test_requantize_adds_zero_point_then_clamps():
    d = dyadic(0.5)
    out = requantize(np.array([INT32.min, -300, 0, 10, 300, INT32.max]), d, zero_point=128, qmin=0, qmax=255)
    assert out.tolist() == [0, 0, 128, 133, 255, 255]
