"""LayerNorm in integers (used by ``lower_integer``): int32 input on a fine grid to 8-bit or fine outputs.

The input is an int32 tensor ``v`` standing for ``s_v * v`` (a residual sum requantized once to a grid with
|v| < 2^30, ``GRID_BITS``, sized by the sum's worst case), normalized over its last axis (n long). Per row,
in one scheduled kernel:

    m     = floor((sum_i v_i + n div 2) / n)                    int64: the mean, rounded
    c_i   = v_i - m                                            int64
    s     = max(0, bits(max_i |c_i|) - 24)                      the row's own scale: c_i >> s keeps 24 bits of
    d_i   = c_i >> s                                           its largest |c|, whatever the grid's worst case
    V     = floor(sum_i d_i^2 / n) + (E >> 2s)                 int64 (n < 2^14); E = round(eps / s_v^2)
    r     = isqrt(V)                                           Newton from 2^ceil(bits(V) / 2), 8 steps and a
                                                               final correction: floor(sqrt(V)); at least 1
    R     = floor(2^(b + 35) / r),  b = bits(r)                int64, in (2^35, 2^36]
    u_i   = (d_i * R + 2^(b + 18)) >> (b + 19)                 u = round(d / r * 2^16): the normalized value
                                                               in 16 fractional bits, |u| <= sqrt(n) 2^16

then, per output channel k, outside the kernel (elementwise, fused by TVM):

    q_k   = clamp(((u_k * M_k + C_k) >> shift_k) + z, qmin, qmax)   M_k / 2^m_k ~ gamma_k / s_out (dyadic,
                                                                    signed), shift_k = m_k + 16, C_k =
                                                                    round(beta_k / s_out * 2^shift_k) + 2^(shift_k-1)

for the 8-bit anchor the next matmul reads, and the same with s_out a fine grid (|y| < 2^30, ``fine_grid``)
for the readers that want the value itself (the next residual add): ``emit_affine``.

Numerics (``normalized_error``): with sigma the row's std in grid units, the grid and the rounded mean move c
by at most 2 units and the shift floors d by one unit of 2^s <= max(1, sqrt(n) sigma / 2^23); r is within one
unit of 2^s of the std, so |u / 2^16 - c / sigma| <= (2 + 2^s + sqrt(n) (2.5 + 2^(s+1))) / (sigma - 2.5 -
2^(s+1)) + 2^-16 in normalized units. The oracle multiplies it by max |gamma| and adds the fine output's half
step (``compiler.quantization.oracle``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import tvm
from tvm import relax, s_tir, te, tirx

from .dyadic import dyadic
from .integer_softmax import OPAQUE

GRID_BITS = 30
"""The input grid and the fine output grid: |v| < 2^30 (int32, with c = v - m inside int64)."""
GRID_LIMIT = 2**GRID_BITS - 1
ROW_BITS = 24
"""Each row's centred values are shifted to at most this many bits before they are squared: d^2 summed over
a row of fewer than 2^14 stays inside int64."""
MAX_ROW = 2**14
FRACTION_BITS = 16
"""u carries the normalized value (x - mean) / std in this many fractional bits."""
NEWTON_STEPS = 8
PARAMS_ATTRIBUTE = "qc.integer_layer_norm"
"""A PrimFunc attribute: the kernel is this module's normalization with these ``Params`` (a dict)."""


@dataclass(frozen=True)
class Params:
    """The integers of one normalization kernel (``PARAMS_ATTRIBUTE``, read by the reference)."""

    epsilon: int  # E = round(eps / s_v^2)


def bit_length(x: np.ndarray) -> np.ndarray:
    """bits(x) for x >= 0 (0 for 0) in int64, by comparison (exact for every int64)."""
    x = np.asarray(x, np.int64)
    return (x[..., None] >= (np.int64(1) << np.arange(63, dtype=np.int64))).sum(axis=-1).astype(np.int64)


def reference(v: np.ndarray, params: Params) -> np.ndarray:
    """The normalization in numpy (the reference interpreter's twin of ``kernel``): the same integers."""
    v = np.asarray(v, np.int64)
    n = v.shape[-1]
    c = v - (v.sum(axis=-1, keepdims=True) + n // 2) // n
    shift = np.maximum(bit_length(np.abs(c).max(axis=-1, keepdims=True)) - ROW_BITS, 0)
    d = c >> shift
    variance = (d * d).sum(axis=-1, keepdims=True) // n + (np.int64(params.epsilon) >> (2 * shift))
    root = np.left_shift(np.int64(1), (bit_length(variance) + 1) // 2)
    for _ in range(NEWTON_STEPS):
        root = (root + variance // root) >> 1
    root = np.maximum(np.where(root * root > variance, root - 1, root), 1)
    bits = bit_length(root)
    reciprocal = np.left_shift(np.int64(1), bits + 35) // root
    return ((d * reciprocal + np.left_shift(np.int64(1), bits + 18)) >> (bits + 19)).astype(np.int32)


def kernel(shape: tuple[int, ...], params: Params) -> tvm.tirx.PrimFunc:
    """The PrimFunc: rows in parallel; per row its mean, largest |c|, variance, root and normalized values."""
    n = shape[-1]
    v = te.placeholder(shape, "int32", "grid")
    rows = shape[:-1]
    i64 = lambda x: tirx.const(x, "int64")  # noqa: E731

    def bits(x):
        return i64(64) - tirx.clz(x).astype("int64")

    k = te.reduce_axis((0, n), "k")
    total = te.compute(rows, lambda *r: te.sum(v[(*r, k)].astype("int64"), axis=k), name="total")
    mean = te.compute(rows, lambda *r: tirx.floordiv(total[r] + i64(n // 2), i64(n)), name="mean")

    def centred(*i):
        return v[i].astype("int64") - mean[i[:-1]]

    a = te.reduce_axis((0, n), "a")
    top = te.compute(rows, lambda *r: te.max(tirx.abs(centred(*r, a)), axis=a), name="top")
    shift = te.compute(rows, lambda *r: tirx.max(bits(top[r]) - i64(ROW_BITS), i64(0)), name="shift")

    def scaled(*i):
        return centred(*i) >> shift[i[:-1]]

    j = te.reduce_axis((0, n), "j")
    squares = te.compute(rows, lambda *r: te.sum(scaled(*r, j) * scaled(*r, j), axis=j), name="squares")
    variance = te.compute(rows, lambda *r: tirx.floordiv(squares[r], i64(n)) +
                          (i64(params.epsilon) >> (shift[r] * i64(2))), name="variance")
    root = te.compute(rows, lambda *r: i64(1) << tirx.floordiv(bits(variance[r]) + i64(1), i64(2)), name="sqrt0")
    for step in range(NEWTON_STEPS):
        previous = root
        root = te.compute(rows, lambda *r: (previous[r] + tirx.floordiv(variance[r], previous[r])) >> i64(1),
                          name=f"sqrt{step + 1}")
    last = root
    root = te.compute(rows, lambda *r: tirx.max(tirx.Select(last[r] * last[r] > variance[r], last[r] - i64(1),
                                                            last[r]), i64(1)), name="sqrt")
    reciprocal = te.compute(rows, lambda *r: tirx.floordiv(i64(1) << (bits(root[r]) + i64(35)), root[r]),
                            name="reciprocal")
    out = te.compute(shape, lambda *i: ((scaled(*i) * reciprocal[i[:-1]] + (i64(1) << (bits(root[i[:-1]]) + i64(18))))
                                        >> (bits(root[i[:-1]]) + i64(19))).astype("int32"), name="normalized")
    func = te.create_prim_func([v, out])
    sch = s_tir.Schedule(func)
    loops = sch.get_loops(sch.get_sblock("normalized"))
    row = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
    names = ["reciprocal", "sqrt"] + [f"sqrt{s}" for s in range(NEWTON_STEPS, -1, -1)] + \
        ["variance", "squares", "shift", "top", "mean", "total"]
    for name in names:
        sch.compute_at(sch.get_sblock(name), row)
    sch.vectorize(loops[-1])
    if len(loops) > 1:
        sch.parallel(row)
    attrs = {"tirx.is_scheduled": True, PARAMS_ATTRIBUTE: asdict(params), "tirx.noalias": True,
             "op_pattern": OPAQUE}
    return sch.mod["main"].with_attrs(attrs).without_attr("global_symbol")  # named by the module it joins


def emit_normalized(builder: relax.BlockBuilder, v: relax.Var, grid: float, epsilon: float) -> relax.Var:
    """u (int32, 16 fractional bits) of the int32 grid values ``v`` (real value ``grid * v``)."""
    params = Params(int(round(epsilon / grid**2)))
    shape = tuple(int(d) for d in v.ty.shape)
    gv = builder.add_func(kernel(shape, params), "integer_layer_norm")
    return builder.emit(relax.call_tir(gv, relax.Tuple([v]), relax.TensorType(shape, "int32")))


def affine_constants(gamma: np.ndarray, beta: np.ndarray, scale: float, zero: int) -> tuple[np.ndarray, ...]:
    """(M, C, shift) per channel for q = ((u * M + C) >> shift) + z ~ round((gamma u / 2^16 + beta) / scale) + z:
    M / 2^m the signed dyadic form of gamma / scale, shift = m + 16, C = round(beta / scale * 2^shift) +
    2^(shift-1). Where beta / scale * 2^shift would pass 2^61, M drops low bits (the shift with it)."""
    multipliers, shifts, offsets = [], [], []
    for g, b in zip(np.asarray(gamma, np.float64), np.asarray(beta, np.float64)):
        d = dyadic(abs(g) / scale) if g != 0 else None
        m, c = (int(np.sign(g)) * d.b, d.c) if d is not None else (0, 31)
        room = 61 - max(0, math.ceil(math.log2(abs(b) / scale))) if b != 0 else 61
        shift = min(c + FRACTION_BITS, room)
        if shift < c + FRACTION_BITS:
            drop = c + FRACTION_BITS - shift
            m = int(np.sign(m)) * ((abs(m) + (1 << (drop - 1))) >> drop)
        multipliers.append(m)
        shifts.append(shift)
        offsets.append(round(b / scale * 2.0**shift) + (1 << (shift - 1)))
    return np.asarray(multipliers, np.int64), np.asarray(offsets, np.int64), np.asarray(shifts, np.int64)


def fits(gamma: np.ndarray, beta: np.ndarray, scale: float, n: int) -> bool:
    """Whether ``affine_constants`` for ``scale`` keep 16 fractional bits of every product and every sum
    inside int64."""
    if not (np.all(np.isfinite(gamma)) and np.all(np.isfinite(beta)) and scale > 0):
        return False
    try:
        multipliers, offsets, shift = affine_constants(gamma, beta, scale, 0)
    except (ValueError, OverflowError):
        return False
    top = int(math.sqrt(n) * 2**FRACTION_BITS) + 1
    return bool(np.all(shift > FRACTION_BITS) and
                all(abs(int(m)) * top + abs(int(c)) < 2**62 for m, c in zip(multipliers, offsets)))


def emit_affine(builder: relax.BlockBuilder, u: relax.Var, gamma: np.ndarray, beta: np.ndarray, scale: float,
                zero: int, qmin: int, qmax: int, dtype: str) -> relax.Var:
    """q = clamp(((u * M + C) >> shift) + z, qmin, qmax) as ``dtype``: gamma u / 2^16 + beta on ``scale``."""
    multipliers, offsets, shift = affine_constants(gamma, beta, scale, zero)
    i64 = lambda x: relax.const(np.asarray(x, np.int64), "int64")  # noqa: E731
    emit = builder.emit
    y = emit(relax.op.multiply(emit(relax.op.astype(u, "int64")), i64(multipliers)))
    y = emit(relax.op.right_shift(emit(relax.op.add(y, i64(offsets))), i64(shift)))
    if zero:
        y = emit(relax.op.add(y, i64(zero)))
    y = emit(relax.op.minimum(emit(relax.op.maximum(y, i64(qmin))), i64(qmax)))
    return emit(relax.op.astype(y, dtype))


def normalized_error(n: int, root: float) -> float:
    """The largest |u / 2^16 - (x - mean) / std| of a row whose std is ``root`` grid units, the grid's own
    rounding of x included: x moves by at most 1.5 units (v rounded once, or each of two terms by half, and a
    float operand first put on a grid at least as fine: half a unit more), the rounded mean by 0.5 more, so c
    by 2; the row's shift floors d by one unit of 2^s <= max(1, sqrt(n) root / 2^23) (|c| <= sqrt(n) std), and
    r is within one such unit of the std (V's floor, r's floor) plus the change c's error makes (2.5 units);
    with |c| / std <= sqrt(n): (2 + 2^s + sqrt(n) (2.5 + 2^(s+1))) / (root - 2.5 - 2^(s+1)), plus R's floor
    and u's rounding (2^-16)."""
    unit = max(1.0, math.sqrt(n) * root / 2**(ROW_BITS - 1))
    spread = 2.5 + 2 * unit
    return (2 + unit + math.sqrt(n) * spread) / max(root - spread, 1.0) + 2.0**-FRACTION_BITS


def fine_grid(gamma: np.ndarray, beta: np.ndarray, n: int) -> float:
    """The grid of the output that readers wanting the value itself get: |gamma u / 2^16 + beta| < 2^30 units."""
    top = float(np.max(np.abs(gamma), initial=0.0)) * math.sqrt(n) + float(np.max(np.abs(beta), initial=0.0))
    return (top or 1.0) / GRID_LIMIT
