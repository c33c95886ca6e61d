"""x86_high_product: the high half of 32 x 32-bit products on vector lanes, two ``vpmuldq`` per vector.

``lower_integer``'s requantize (``_high_product``) rescales in int32 through ``hi32(v * b)``, written in TIR
as ``int32((int64(v) * int64(b)) >> 32)``. LLVM does not see that as one signed multiply-high on vectors: it
sign-extends each half of the vector, multiplies in 64 bits (``vpmullq`` where TVM has widened the add that
makes v) and narrows back, 8 lanes at a time. This TIR pass, run after vectorization, rewrites each such
expression on int32 lanes into two ``vpmuldq`` (the even lanes, and the odd ones shifted down) whose high
halves interleave by one shuffle: the int32 result, 16 lanes per zmm (8 per ymm).

Requires: lowered, vectorized TIR of an x86 target with AVX2 (ymm) or AVX-512 F (zmm).
Guarantees: every ``Cast(int32xN, (X * Y) >> 32)`` whose factors are sign extensions of int32 lanes
(``Cast(int64xN, v)``, ``Broadcast(Cast(int64, s))``, an int32 constant, or a sum of such) becomes the
equivalent multiply-high for N >= 4 (a last piece short of a register is padded to the narrowest register
holding it: a 14-wide depthwise row takes one zmm, not LLVM's int64 lanes); everything else is left as it is.
Numerics: exact. hi32 of the int64 product is what the cast keeps. A sum of sign extensions is narrowed to
an int32 add: TVM's simplifier writes ``int64(a + b)`` of an int32 add as ``int64(a) + int64(b)`` (signed
overflow being undefined), and the only producer of this pattern, ``lower_integer._high_product``, proves
|a + b| < 2^31 before emitting it.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.target import Target
from tvm.tirx import compilation_pipeline
from tvm_ffi.structural import structural_map

from .task_buffers import task_buffers_pass

PIPELINES = {16: "qc_x86_high_product_zmm", 8: "qc_x86_high_product_ymm", 0: "qc_cpu"}  # by register lanes


def _lanes(dtype: str, base: str) -> int | None:
    """N of ``{base}xN`` (1 for the scalar ``base``), None for another type."""
    if dtype == base:
        return 1
    name, _, count = dtype.partition("x")
    return int(count) if name == base and count.isdigit() else None


def _narrow(expr, lanes: int):
    """``expr`` (int64 lanes) as the int32 lanes it sign-extends, or None."""
    kind = type(expr).__name__
    if kind == "Cast" and _lanes(str(expr.value.ty), "int32") == lanes:
        return expr.value
    if kind == "Broadcast":
        inner = _narrow(expr.value, 1)
        return None if inner is None else tirx.Broadcast(inner, lanes)
    if kind == "IntImm" and -2**31 <= int(expr.value) < 2**31:
        return tirx.const(int(expr.value), "int32")
    if kind == "Add":
        a, b = _narrow(expr.a, lanes), _narrow(expr.b, lanes)
        return None if a is None or b is None else a + b
    return None


def _chunk(vector, start: int, width: int, lanes: int):
    """Lanes ``start`` .. ``start + width`` of ``vector`` (of ``lanes``), its last lane repeated past its end."""
    sources = [vector] if start + width <= lanes else [vector, vector]  # (a shuffle makes no more lanes than it reads)
    return tirx.Shuffle(sources, [tirx.const(min(start + i, lanes - 1), "int32") for i in range(width)])


def _chunk_widths(lanes: int, width: int) -> list[int]:
    """Register-sized pieces covering ``lanes``: whole registers of ``width``, the rest in the narrowest
    register (down to 4 lanes, an xmm) that holds it (14 lanes: one zmm; 7: one ymm; 28: a zmm and a zmm)."""
    widths = [width] * (lanes // width)
    rest = lanes % width
    if rest:
        last = width
        while last // 2 >= rest and last > 4:
            last //= 2
        widths.append(last)
    return widths


def _high(a, b, width: int):
    """hi32(a * b) of two int32 vectors of ``width`` lanes: even products, odd products, interleaved."""
    wide, narrow = f"int64x{width // 2}", f"int32x{width}"

    thirty_two = tirx.Broadcast(tirx.const(32, "int64"), width // 2)

    def even(x):  # the even lanes sign-extended in place: what vpmuldq reads
        return (tirx.reinterpret(wide, x) << thirty_two) >> thirty_two

    def odd(x):  # the odd lanes, sign-extended, moved down to the even ones
        return tirx.reinterpret(wide, x) >> thirty_two

    evens, odds = (tirx.reinterpret(narrow, f(a) * f(b)) for f in (even, odd))
    order = [index for i in range(width // 2) for index in (2 * i + 1, width + 2 * i + 1)]
    return tirx.Shuffle([evens, odds], [tirx.const(i, "int32") for i in order])


def _rewrite(width: int):
    def rewrite(node):
        lanes = _lanes(str(node.ty), "int32")
        shift = node.value
        if not lanes or lanes < 4 or type(shift).__name__ != "RShift" or type(shift.a).__name__ != "Mul":
            return node
        amount = shift.b.value if type(shift.b).__name__ == "Broadcast" else shift.b
        if type(amount).__name__ != "IntImm" or int(amount.value) != 32:
            return node
        a, b = _narrow(shift.a.a, lanes), _narrow(shift.a.b, lanes)
        if a is None or b is None:
            return node
        parts, start = [], 0
        for piece in _chunk_widths(lanes, width):
            parts.append(_high(_chunk(a, start, piece, lanes), _chunk(b, start, piece, lanes), piece))
            start += piece
        if len(parts) == 1 and start == lanes:
            return parts[0]
        return tirx.Shuffle(parts, [tirx.const(i, "int32") for i in range(lanes)])

    return rewrite


def high_product_pass(width: int) -> tvm.transform.Pass:
    """The rewrite for registers of ``width`` int32 lanes (16: zmm, 8: ymm)."""
    rewrite = _rewrite(width)

    @tirx.transform.prim_func_pass(opt_level=0, name=f"qc.HighProduct{width}")
    def _pass(func, mod, ctx):
        return func.with_body(structural_map(func.body, [(tirx.Cast, rewrite)]))

    return _pass


def _register(width: int) -> None:
    def factory():
        pipeline, host, device = compilation_pipeline.get_tir_pipeline("s_tir")
        passes = [pipeline, task_buffers_pass()] + ([high_product_pass(width)] if width else [])
        return tvm.transform.Sequential(passes), host, device

    compilation_pipeline.register_tir_pipeline(PIPELINES[width], factory)


for _width in PIPELINES:
    _register(_width)


def tir_pipeline(target: Target) -> str:
    """The TIR pipeline to compile for ``target``: TVM's, then ``task_buffers`` on every CPU and the rewrite
    where the CPU has the vectors."""
    from tvm.target.codegen import target_has_features

    if target.kind.name != "llvm":
        return "default"
    if target_has_features("avx512f", target):
        return PIPELINES[16]
    return PIPELINES[8] if target_has_features("avx2", target) else PIPELINES[0]
