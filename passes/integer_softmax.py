"""Softmax in integers: from int32 scores to 8-bit probabilities, with no float op (used by ``lower_integer``).

The scores are an int32 tensor ``x`` standing for ``s * x`` (attention's Q x K^T sums, the 1/sqrt(d) factor
folded into ``s``), optionally with a boolean ``keep`` mask (the additive ``where(mask, 0, -big)`` of a
transformer, big >= 1e30: a dropped score's probability is 0). Per row (the last axis, n long):

    d_i   = max_j x_j - x_i                                      int32, >= 0 (dropped scores: x_i -> -2^30)
    t_i   = min((d_i * b + 2^(c-1)) >> c, 31 * 2^F)              int64: t_i = round(d_i * s / ln 2 * 2^F),
                                                                 b / 2^c the dyadic form of s / ln 2 * 2^F
    e_i   = (E(t_i mod 2^F) << (B - 20)) >> (t_i div 2^F)        int32; E(f) ~ 2^20 * 2^(-f / 2^F), a quartic
          = 2^B * exp(-s d_i), to the roundings below           in f by Horner (``POWER_COEFFICIENTS``)
    S     = sum_i e_i                                            int32: n * 2^B < 2^31
    q_i   = clamp((e_i * R + 2^(P-1)) >> P + z, qmin, qmax)      int64; R = floor(K / S), K = round(2^P / s_out)

F = ``FRACTION_BITS`` fractional bits of the base-2 exponent, B the largest with n * 2^B < 2^31 (from 20 to
``MAX_UNIT_BITS``), P = ``RECIPROCAL_BITS``. A polynomial rather than a 2^F-entry table: 16 lanes of multiply-
adds instead of a gather, which TVM scalarizes (the table version spent 65 of its 213 us per MiniLM softmax
there). A row whose scores are all dropped comes out uniform, as float softmax makes it. One PrimFunc per
shape (``kernel``), rows in parallel; ``reference`` is its numpy twin, which the reference interpreter runs.

Numerics (``max_error``, in probability units; the oracle adds it to the softmax anchor's bound): with E_i =
exp(-s d_i) <= 1 and max_i E_i = 1, e_i / 2^B = E_i (1 + a_i) + r_i, |a_i| <= a = 2^(2^-(F+1)) - 1 + e_poly
(t rounded to the nearest 2^-F; e_poly the polynomial's largest relative error over its 2^F inputs, computed
exhaustively: 6.8e-6) and |r_i| <= 2^-B (the shift floored); so S / 2^B = (sum E)(1 + A), |A| <= a + n 2^-B
(sum E >= 1), and |e_i / S - p_i| <= (a + |A| + 2^-B) / (1 - |A|), plus R's floor (relative K^-1 S < 2^-20);
then one rounding to the output grid. On MiniLM (n = 128, F = 10, B = 23): 7.2e-4, 0.18 of a 1/255 step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import tvm
from tvm import relax, s_tir, te, tirx

from .dyadic import dyadic

FRACTION_BITS = 10
"""F: the base-2 exponent is kept to 2^-F."""
POWER_BITS = 20
POWER_COEFFICIENTS = (7086, -55598, 250900, -726668, 1048571)
"""E(f) = ((((c0 f >> F) + c1) f >> F) + c2 ...) ~ 2^20 * 2^(-f / 2^F), 0 <= f < 2^F: a quartic fitted for
relative error (least squares), its coefficients rounded to integers; every product stays below 2^31."""
MAX_UNIT_BITS = 24
"""The largest B: e = 2^B for the row's largest score."""
RECIPROCAL_BITS = 48
"""P: each probability is e_i * floor(K / S) >> P, K = round(2^P / s_out)."""
LANES = 16
"""Partial maxima / sums per row kept in this many lanes (rows longer than it, of a length it divides)."""
MASKED = -(2**30)
"""A dropped score; scores must stay below ``MAX_SCORE`` in magnitude so that max - x cannot overflow int32."""
MAX_SCORE = 2**29
OPAQUE = 8  # relax's OpPatternKind: fusion leaves the scheduled kernel whole
PARAMS_ATTRIBUTE = "qc.integer_softmax"
"""A PrimFunc attribute: the kernel is this module's integer softmax with these ``Params`` (a dict)."""


@dataclass(frozen=True)
class Params:
    """The integers of one softmax kernel (``PARAMS_ATTRIBUTE`` on its PrimFunc, read by the reference)."""

    multiplier: int  # b: t = (d * b + 2^(c-1)) >> c
    shift: int  # c
    numerator: int  # K = round(2^P / s_out)
    zero: int
    qmin: int
    qmax: int
    dtype: str

    @classmethod
    def of(cls, scale: float, out_scale: float, zero: int, qmin: int, qmax: int, dtype: str) -> "Params":
        step = dyadic(scale / math.log(2) * 2**FRACTION_BITS)
        return cls(step.b, step.c, round(2.0**RECIPROCAL_BITS / out_scale), int(zero), qmin, qmax, dtype)


def fits(bound: int, scale: float, out_scale: float, zero: int) -> bool:
    """Whether int32 scores with |x| <= ``bound`` standing for ``scale * x`` can take the integer softmax to
    ``out_scale`` / ``zero`` (every intermediate inside its integer type)."""
    if not (bound < MAX_SCORE and 0 < scale < 2.0**18 and out_scale > 0):
        return False
    return 2.0**RECIPROCAL_BITS / out_scale + abs(zero) * 2.0**RECIPROCAL_BITS < 2.0**62


def unit_bits(n: int) -> int:
    """B: the largest power of two with n * 2^B < 2^31, from ``POWER_BITS`` to ``MAX_UNIT_BITS``."""
    return max(POWER_BITS, min(MAX_UNIT_BITS, 30 - math.ceil(math.log2(max(n, 1)))))


def powers_of_two(f: np.ndarray) -> np.ndarray:
    """E(f) in int32 (Horner, arithmetic shifts), as the kernel computes it."""
    f = np.asarray(f, np.int32)
    value = np.full(f.shape, POWER_COEFFICIENTS[0], np.int32)
    for c in POWER_COEFFICIENTS[1:]:
        value = ((value * f) >> FRACTION_BITS) + np.int32(c)
    return value


def _polynomial_error() -> float:
    f = np.arange(2**FRACTION_BITS)
    return float(np.abs(powers_of_two(f) / 2.0**POWER_BITS / np.exp2(-f / 2**FRACTION_BITS) - 1).max())


POLYNOMIAL_ERROR = _polynomial_error()
"""The largest relative error of E over all its inputs (computed, not estimated)."""


def max_error(n: int) -> float:
    """The largest |integer probability (before its final rounding) - exact softmax| for rows of ``n``."""
    unit = 2.0**-unit_bits(n)
    exponent = 2.0 ** (2.0 ** -(FRACTION_BITS + 1)) - 1.0 + POLYNOMIAL_ERROR
    total = exponent + n * unit  # |A|, the sum's relative error
    return (exponent + total + unit) / (1 - total) + 2.0**-20


def reference(x: np.ndarray, keep: np.ndarray | None, params: Params) -> np.ndarray:
    """The integer softmax in numpy (the reference interpreter's twin of ``kernel``): the same integers."""
    x = np.asarray(x, np.int32)
    if keep is not None:
        x = np.where(keep, x, np.int32(MASKED))
    distance = (x.max(axis=-1, keepdims=True) - x).astype(np.int64)
    exponent = (distance * params.multiplier + (1 << (params.shift - 1))) >> params.shift
    exponent = np.minimum(exponent, 31 << FRACTION_BITS).astype(np.int32)
    lift = unit_bits(x.shape[-1]) - POWER_BITS
    powers = (powers_of_two(exponent & (2**FRACTION_BITS - 1)) << lift) >> (exponent >> FRACTION_BITS)
    total = powers.sum(axis=-1, keepdims=True, dtype=np.int32).astype(np.int64)
    rounding = (1 << (RECIPROCAL_BITS - 1)) + (params.zero << RECIPROCAL_BITS)
    q = (powers.astype(np.int64) * (params.numerator // total) + rounding) >> RECIPROCAL_BITS
    return np.clip(q, params.qmin, params.qmax).astype(params.dtype)


def kernel(shape: tuple[int, ...], keep_shape: tuple[int, ...] | None, params: Params) -> tvm.tirx.PrimFunc:
    """The PrimFunc: rows in parallel; per row its max, then exponents, powers, their sum and the
    probabilities, each a loop over the row in vector lanes (the row's buffers stay in cache)."""
    n = shape[-1]
    x = te.placeholder(shape, "int32", "scores")
    keep = te.placeholder(keep_shape, "bool", "keep") if keep_shape is not None else None
    i64, i32 = (lambda v: tirx.const(v, "int64")), (lambda v: tirx.const(v, "int32"))  # noqa: E731

    def score(*i):
        if keep is None:
            return x[i]
        at = [0 if size == 1 else i[len(i) - len(keep_shape) + a] for a, size in enumerate(keep_shape)]
        return tirx.Select(keep[tuple(at)], x[i], i32(MASKED))

    k = te.reduce_axis((0, n), "k")
    top = te.compute(shape[:-1], lambda *r: te.max(score(*r, k), axis=k), name="top")
    distance = te.compute(shape, lambda *i: top[i[:-1]] - score(*i), name="distance")
    exponent = te.compute(shape, lambda *i: tirx.min(
        (distance[i].astype("int64") * i64(params.multiplier) + i64(1 << (params.shift - 1))) >> i64(params.shift),
        i64(31 << FRACTION_BITS)).astype("int32"), name="exponent")
    lift = unit_bits(n) - POWER_BITS

    def power(*i):
        f = exponent[i] & i32(2**FRACTION_BITS - 1)
        value = i32(POWER_COEFFICIENTS[0])
        for c in POWER_COEFFICIENTS[1:]:
            value = ((value * f) >> i32(FRACTION_BITS)) + i32(c)
        return (value << i32(lift)) >> (exponent[i] >> i32(FRACTION_BITS))

    powers = te.compute(shape, power, name="powers")
    j = te.reduce_axis((0, n), "j")
    total = te.compute(shape[:-1], lambda *r: te.sum(powers[(*r, j)], axis=j), name="total")
    reciprocal = te.compute(shape[:-1], lambda *r: i64(params.numerator) // total[r].astype("int64"),
                            name="reciprocal")
    rounding = (1 << (RECIPROCAL_BITS - 1)) + (params.zero << RECIPROCAL_BITS)
    out = te.compute(shape, lambda *i: tirx.max(tirx.min(
        (powers[i].astype("int64") * reciprocal[i[:-1]] + i64(rounding)) >> i64(RECIPROCAL_BITS),
        i64(params.qmax)), i64(params.qmin)).astype(params.dtype), name="probabilities")
    func = te.create_prim_func([x] + ([keep] if keep is not None else []) + [out])
    sch = s_tir.Schedule(func)
    partials = {}
    lanes = LANES if n % LANES == 0 and n > LANES else 1
    for name in ("top", "total"):  # the row reductions as LANES partial results in vector lanes
        if lanes > 1:
            _, inner = sch.split(sch.get_loops(sch.get_sblock(name))[-1], [None, lanes])
            partials[name] = sch.rfactor(inner, 0)
    rows = sch.get_loops(sch.get_sblock("probabilities"))[:-1]
    row = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    for name in ("reciprocal", "total", "powers", "exponent", "distance", "top"):
        sch.compute_at(sch.get_sblock(name), row)
        if name in partials:
            sch.compute_at(partials[name], row)
            loops = sch.get_loops(partials[name])
            sch.reorder(loops[-1], loops[-2])
            sch.vectorize(sch.get_loops(partials[name])[-1])
    for name in ("distance", "exponent", "powers", "probabilities"):
        sch.vectorize(sch.get_loops(sch.get_sblock(name))[-1])
    sch.parallel(row)
    attrs = {"tirx.is_scheduled": True, PARAMS_ATTRIBUTE: asdict(params), "tirx.noalias": True,
             "op_pattern": OPAQUE}
    return sch.mod["main"].with_attrs(attrs).without_attr("global_symbol")  # named by the module it joins


def emit_softmax(builder: relax.BlockBuilder, x: relax.Var, scale: float, keep: relax.Var | None,
                 out_scale: float, zero: int, qmin: int, qmax: int, dtype: str) -> relax.Var:
    """Emit the integer softmax of ``scale * x`` along the last axis (``keep`` False drops a score),
    quantized to ``out_scale`` / ``zero`` in [qmin, qmax] as ``dtype``: a ``call_tir`` of ``kernel``."""
    params = Params.of(scale, out_scale, zero, qmin, qmax, dtype)
    shape = tuple(int(d) for d in x.ty.shape)
    keep_shape = tuple(int(d) for d in keep.ty.shape) if keep is not None else None
    gv = builder.add_func(kernel(shape, keep_shape, params), "integer_softmax")
    args = [x] + ([keep] if keep is not None else [])
    return builder.emit(relax.call_tir(gv, relax.Tuple(args), relax.TensorType(shape, dtype)))
