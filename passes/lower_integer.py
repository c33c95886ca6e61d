"""lower_integer: turn the QDQ graph of ``insert_qdq`` into integer arithmetic with dyadic rescaling.

Requires: ``main`` as ``insert_qdq`` left it (one dataflow block, quantize -> dequantize on every anchor,
``dequantize(int8 constant)`` weights on every quantized layer), before ``fold_constant``.
Guarantees: between the entry quantizes and the final dequantizes every quantized layer, bias, ReLU / clip,
residual add, mean, average pooling, product, activation matmul, concat, elementwise chain, max pooling,
reshape, transpose, broadcast and zero padding runs on integers:

    conv2d / matmul   uint8|int8 x int8 -> int32 accumulator (an activation zero point is folded into the
                      bias as -z * sum(W); a padded conv with z != 0 gets an explicit pad with value z);
                      a 4-bit weight is an int8 constant with values in [-8, 7], which
                      ``pack_int8_layers`` stores two per byte (passes/int4.py)
    bias              int32, round(b / (s_x * s_w)) added to the accumulator; a later constant add joins it
                      only while no ReLU / clip has been applied (clamp(y) + c is not clamp(y + c))
    rescale           one dyadic multiplier b / 2^c per output channel (and per branch of a residual add),
                      (acc * b + 2^(c-1)) >> c in int64, then + z_out and a clamp to the output range;
                      emitted as (acc * b + R) >> c with R = offset * b + 2^(c-1) + z_out * 2^c, the same
                      integers (z_out * 2^c is a multiple of 2^c; offset * b moves out of the product).
                      Where (|acc| + |offset|) * 2^l < 2^31 (the accumulator's bound from its weights and
                      input codes; l = max(0, 33 - c)), the same integers in int32: v = (acc + offset) << l,
                      then (hi32(v * b) + 2^(k-1) + z_out * 2^k) >> k with k = c + l - 32, hi32 the high
                      half of the 64-bit product (``_high_product``; 16 lanes per vector instead of 8).
                      A residual add rounds once: each branch to 16 fractional bits,
                      ((acc * b + R_i) >> (c - 16)), then (sum + 2^15 + z_out * 2^16) >> 16; in int32
                      (each branch through the high half as above) where every branch's bound allows it
                      and the sum's bound stays below 2^31, else in int64
    ReLU / clip       the clamp bounds of that requantize (z_out + round(lo / s_out) ...)
    mean, avg pool    int32 window sum (average pooling: a depthwise convolution with weights 1 over the input
                      padded with z), then the dyadic rescale s_x / (n * s_out)
    product           (q_a - z_a)(q_b - z_b) in int32, then the dyadic rescale s_a s_b / s_out
    activation matmul (q_a - z_a) @ (q_b - z_b) summed in int32 (attention's Q x K^T, probabilities x V),
                      then the dyadic rescale s_a s_b / s_out, or dequantized from the sums when its reader
                      is float (the scores feeding softmax)
    concat            parts of the output's scale as they are, the others requantized to it first
    elementwise f(x)  a table over every code of x: T[i] = clamp(round(f(s_x (i - z_x)) / s_out) + z_out),
                      f evaluated in float64 at compile time (``passes.elementwise``), looked up by ``take``
    reshape / transpose / x c   of a sum not yet requantized (attention scores): moved onto its int32 terms,
                      a positive constant factor (1/sqrt(d)) folded into their scale
    softmax           of int32 scores, an additive mask where(keep, 0, -big) folded in (dropped scores get 0):
                      ``passes.integer_softmax``, one kernel from int32 scores to the 8-bit probabilities
    layernorm         over the last axis of an integer sum (a residual add: the accumulator plus the previous
                      layernorm's value): the sum requantized once to an int32 grid sized by its worst case
                      (|v| < 2^30), then ``passes.integer_layer_norm`` (mean, variance, integer square root,
                      the normalized value in 16 fractional bits) and a per-channel affine per output: the
                      8-bit anchor the next matmul reads, and the value on a fine int32 grid for the readers
                      that want it (the next residual add). A float operand of such a residual add (the
                      embeddings' layernorm ahead of the first block) is put on an int32 grid first.

``QuantPolicy.float_ops`` (main's ``qc.float_ops``) keeps softmax and / or layernorm in float anyway.
Everything else is a declared *float island*: its inputs are dequantized, it runs in float, and the
variables it binds are listed in the function attribute ``qc.float_islands`` with the reason in
``qc.float_island_reasons`` (a layer kept in float by the policy, or an op with no integer form; float ops
after the last integer tensor, with no quantize downstream, are the float epilogue, not islands);
``check_integer_only`` fails on any float op in the integer part that is not listed. A layer group nobody
reads as integers (the logits) is dequantized straight from its int32 accumulator. The numerics are those
of ``passes.dyadic``; ``compiler.quantization.reference`` reproduces them bit for bit, and
``compiler.quantization.oracle`` checks them op by op against the QDQ simulation (``qc.anchor_values``
pairs each QDQ integer tensor with its lowered one, ``qc.fine_values`` each integer layernorm's float output
with its fine int32 tensor, ``qc.layer_norm_grids`` the grid each one normalized on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import tvm
from tvm import relax

from .dataflow import function_attrs, main_block, map_vars, op_name, var_args, with_main
from .check_integer_only import ISLAND_REASONS_ATTRIBUTE, ISLANDS_ATTRIBUTE, integer_region
from . import integer_layer_norm, integer_softmax
from .dyadic import dyadic
from .elementwise import evaluate, source_of_call
from .quant_plan import QUANTIZABLE_OPS, integer_avg_pool, is_pass_through, is_residual_add
from .quant_policy import FLOAT_OPS_ATTRIBUTE
from .registry import PassError, register_pass


@dataclass(frozen=True)
class Quant:
    """An integer tensor ``q`` standing for the real tensor ``scale * (q - zero)``, q in [qmin, qmax]."""

    var: relax.Expr
    scale: float
    zero: int
    qmin: int
    qmax: int
    dtype: str


@dataclass(frozen=True)
class Weight:
    """A constant integer weight with per-channel scales along ``axis``."""

    values: np.ndarray
    scale: np.ndarray
    axis: int


@dataclass(frozen=True)
class Term:
    """``scale * (var + offset)``: var an integer tensor; scale and offset broadcast against it."""

    var: relax.Expr
    scale: np.ndarray
    offset: np.ndarray
    bound: int | None = None  # the largest |var| can be; None: its dtype's range


@dataclass(frozen=True)
class Linear:
    """The real tensor ``clamp(sum of terms, lo, hi)``, not materialised yet (an accumulator, a residual sum)."""

    terms: tuple[Term, ...]
    lo: float = -math.inf
    hi: float = math.inf
    materialised: dict = field(default_factory=dict, compare=False)


ANCHOR_VALUES_ATTRIBUTE = "qc.anchor_values"
"""main's attribute: {name of the integer tensor a QDQ ``dequantize`` read: name of the lowered integer tensor
that stands for it}. The oracle (``compiler.quantization.oracle``) pairs the two graphs through it."""

MUTATIONS: set[str] = set()
"""Test-only: deliberate lowering bugs that prove the oracle and the fuzzer can fail. ``"constant_add_fold"``
folds a constant add into an accumulator that already carries a ReLU / clip (clamp(y + c) for clamp(y) + c);
``"zero_point"`` folds the input zero point of each layer's largest-|sum W| channel off by one. Never set
outside tests."""


@dataclass(frozen=True)
class Elementwise:
    """An elementwise function of the integer tensor ``source`` (not emitted yet): ``chain`` are the original
    bindings in program order, ``var`` the one this value stands for. Quantized, it becomes a table."""

    source: Quant
    source_var: relax.Var
    chain: tuple
    var: relax.Var


@dataclass(frozen=True)
class Concat:
    """A concatenation of integer tensors whose scales differ (not emitted yet): requantized to the output's."""

    parts: tuple
    axis: int


@dataclass(frozen=True)
class Masked:
    """``scores`` plus an additive mask ``where(keep, 0, -big)`` (big >= ``MASK_MAGNITUDE``): a dropped score
    (``keep`` False) stands for minus infinity. Only a softmax reads it in integers."""

    scores: Linear
    keep: relax.Var
    mask: relax.Var  # the lowered float mask, for a float reader


@dataclass(frozen=True)
class Softmax:
    """The softmax of integer scores along the last axis (not emitted yet): quantized, it is
    ``passes.integer_softmax``; read in float, a float softmax (an island)."""

    scores: Linear | Masked
    call: relax.Call


@dataclass(frozen=True)
class LayerNorm:
    """A layernorm over the last axis of an integer sum (not emitted yet): ``passes.integer_layer_norm``
    normalizes it once (``materialised["normalized"]``); each quantize of it is a per-channel affine of that,
    and readers that want the value itself (the next residual add) get it on a fine int32 grid."""

    x: Linear
    call: relax.Call
    key: str  # its name in ``layer_norm_keys``
    gamma: np.ndarray = field(compare=False)
    beta: np.ndarray = field(compare=False)
    materialised: dict = field(default_factory=dict, compare=False)


FINE_HEADROOM = 16
"""A float operand put on a fine int32 grid (``on_fine_grid``) may reach this many times its calibrated range."""

LAYER_NORM_GRIDS_ATTRIBUTE = "qc.layer_norm_grids"
"""main's attribute: {``layer_norm_keys`` name of a QDQ layernorm: the grid its int32 input was requantized to}. The
oracle's bound for the integer layernorm depends on it (``integer_layer_norm.normalized_error``)."""


def layer_norm_keys(func: relax.Function) -> dict[relax.Var, str]:
    """How the lowering's attributes name each layernorm of ``func`` (one dataflow block): by its position in
    program order, ``layer_norm#i`` (variable names of a QDQ module may repeat)."""
    norms = [b.var for b in func.body.blocks[0].bindings if op_name(b.value) == "relax.nn.layer_norm"]
    return {var: f"layer_norm#{index}" for index, var in enumerate(norms)}


FINE_VALUES_ATTRIBUTE = "qc.fine_values"
"""main's attribute: {``layer_norm_keys`` name of a QDQ layernorm: [name of the lowered int32 tensor that holds its
value on a fine grid, that grid]}. The oracle pins the simulation's layernorm output to it, so the residual
stream is compared layer by layer like the anchors (``compiler.quantization.oracle``)."""

MASK_MAGNITUDE = 1e30
"""An additive constant at least this negative drops a score outright (exp underflows to 0 in float32)."""


def is_additive_mask(value: relax.Expr | None) -> bool:
    """``where(keep, 0, -big)`` with big >= ``MASK_MAGNITUDE``: the additive mask of attention scores."""
    if op_name(value) != "relax.where":
        return False
    kept, dropped = value.args[1:]
    if not all(isinstance(c, tvm.ir.expr.GenericConst) and c.value.numpy().size == 1 for c in (kept, dropped)):
        return False
    return float(kept.value.numpy()) == 0.0 and float(dropped.value.numpy()) <= -MASK_MAGNITUDE

INTEGER_VALUES = (Quant, Linear, Elementwise, Concat, Masked, Softmax, LayerNorm)
"""What the lowering holds for a tensor computed in integers (a float op reading one is an island)."""


@register_pass("lower_integer")
def lower_integer(mod: tvm.IRModule) -> tvm.IRModule:
    """Relax (QDQ) -> Relax with integer kernels between quantize and dequantize; float islands listed."""
    return _Lowering(mod).run()


def _layer_names(block: relax.BindingBlock) -> dict[relax.Var, str]:
    """The plan's name (``conv2d_3``) of each conv2d / matmul binding: ``quant_plan.quantizable_layers``
    counts the float module's layers with a constant weight in program order; in the QDQ module a quantized
    layer's weight is the dequantize of a constant, a float one's still the constant."""
    dequantized = {b.var for b in block.bindings if op_name(b.value) == "relax.dequantize"
                   and isinstance(b.value.args[0], tvm.ir.expr.GenericConst)}
    names: dict[relax.Var, str] = {}
    seen: dict[str, int] = {}
    for binding in block.bindings:
        kind = QUANTIZABLE_OPS.get(op_name(binding.value))
        weight = binding.value.args[1] if kind else None
        if kind and (isinstance(weight, tvm.ir.expr.GenericConst) or weight in dequantized):
            names[binding.var] = f"{kind}_{seen.get(kind, 0)}"
            seen[kind] = seen.get(kind, 0) + 1
    return names


class _Lowering:
    def __init__(self, mod: tvm.IRModule):
        self.mod = mod
        self.func = mod["main"]
        self.block = main_block(mod, "lower_integer")
        self.builder = relax.BlockBuilder()
        self.values: dict[relax.Var, object] = {}  # original var -> Quant | Weight | Linear | new float var
        self.floats: dict[int, relax.Var] = {}  # id(Quant) -> its dequantized var
        self.islands: dict[str, str] = {}  # new vars bound by float ops that read integer values -> why
        self.island_reasons_by_var: dict[relax.Var, str] = {}
        self.boundary: list[relax.Var] | None = None  # float arithmetic emitted for the island being built
        self.island_vars: set[relax.Var] = set()  # original vars of those ops
        self.anchor_values: dict[str, str] = {}  # QDQ integer tensor name -> lowered integer tensor name
        self.layer_names = _layer_names(self.block)  # conv2d / matmul binding -> the plan's layer name
        self.originals = {b.var: b.value for b in self.block.bindings}
        self.layer_norm_grids: dict[str, float] = {}
        attrs = self.func.attrs
        kept_float = attrs[FLOAT_OPS_ATTRIBUTE] if attrs and FLOAT_OPS_ATTRIBUTE in attrs else []
        self.float_ops = {str(op) for op in kept_float}  # QuantPolicy.float_ops
        self.layer_norm_keys = layer_norm_keys(self.func)
        self.fine_values: dict[str, list] = {}  # QDQ layernorm name -> [its fine int32 tensor's name, grid]
        self.entry_scales: dict[relax.Var, tuple[float, int, str]] = {}  # float var -> its entry quantize
        for b in self.block.bindings:
            if op_name(b.value) == "relax.quantize" and isinstance(b.value.args[0], relax.Var):
                self.entry_scales[b.value.args[0]] = (_scalar(b.value.args[1]), int(_scalar(b.value.args[2])),
                                                      str(b.value.attrs.out_dtype))

    def run(self) -> tvm.IRModule:
        output = self.func.body.body
        with self.builder.function("main", self.func.params, attrs=function_attrs(self.func)):
            with self.builder.dataflow():
                for binding in self.block.bindings:
                    value = self.lower(binding.var, binding.value)
                    if binding.var.same_as(output):
                        value = self.builder.emit_output(self.as_float(value))
                    self.values[binding.var] = value
                result = self.values[output]
            self.builder.emit_func_output(result)
        lowered = with_main(self.mod, self.builder)
        region = integer_region(lowered)  # float ops after the last integer tensor are the epilogue
        islands = {name: reason for name, reason in self.islands.items() if name in region}
        main = lowered["main"].with_attr(ISLANDS_ATTRIBUTE, list(islands))
        main = main.with_attr(ISLAND_REASONS_ATTRIBUTE, islands)
        main = main.with_attr(ANCHOR_VALUES_ATTRIBUTE, self.anchor_values)
        main = main.with_attr(LAYER_NORM_GRIDS_ATTRIBUTE, self.layer_norm_grids)
        main = main.with_attr(FINE_VALUES_ATTRIBUTE, self.fine_values)
        lowered["main"] = main
        return lowered

    # -- one binding ---------------------------------------------------------------------------------
    def lower(self, var: relax.Var, value: relax.Expr) -> object:
        name = op_name(value)
        args = [self.values.get(a, a) if isinstance(a, relax.Var) else a for a in getattr(value, "args", [])]
        if name == "relax.quantize":
            scale, zero = _scalar(value.args[1]), int(_scalar(value.args[2]))
            return self.quantize(args[0], scale, zero, str(value.attrs.out_dtype))
        if name == "relax.dequantize":
            if isinstance(args[0], Quant):
                self.anchor_values[value.args[0].name] = args[0].var.name
                return args[0]
            if isinstance(args[0], tvm.ir.expr.GenericConst):
                return Weight(args[0].value.numpy(), value.args[1].value.numpy().astype(np.float64),
                              int(value.attrs.axis))
        if name in ("relax.nn.conv2d", "relax.matmul") and isinstance(args[1], Weight):
            if not isinstance(args[0], Quant):
                raise PassError(f"lower_integer: {name} ({var.name}) has an integer weight but a float input")
            return self.layer(value, args[0], args[1], self.layer_names.get(var, QUANTIZABLE_OPS[name]))
        if name in ("relax.reshape", "relax.permute_dims") and isinstance(args[0], Linear):
            moved = self.move(value, args[0])
            if moved is not None:
                return moved
        if name in ("relax.multiply", "relax.divide") and len(args) == 2:
            scaled = self.scale(args, divide=name == "relax.divide")
            if scaled is not None:
                return scaled
        if name == "relax.nn.layer_norm" and name not in self.float_ops:
            lowered = self.layer_norm(var, value, args[0])
            if lowered is not None:
                return lowered
        if any(isinstance(a, LayerNorm) for a in args) and (name == "relax.add" or is_pass_through(value)):
            args = [self.fine(a) if isinstance(a, LayerNorm) else a for a in args]
        if name == "relax.add" and any(isinstance(a, (Quant, Linear)) for a in args):
            args = [self.on_fine_grid(orig, a) for orig, a in zip(value.args, args)]
        if name == "relax.add":
            lowered = self.add(value, args) or self.mask(value, args)
            if lowered is not None:
                return lowered
        if name == "relax.nn.softmax" and name not in self.float_ops and isinstance(args[0], (Linear, Masked)) \
                and self.softmax_fits(value, args[0]):
            return Softmax(args[0], value)
        if name in ("relax.nn.relu", "relax.clip"):
            lowered = self.clamp(value, args[0])
            if lowered is not None:
                return lowered
        if name == "relax.mean" and isinstance(args[0], Quant):
            return self.mean(value, args[0])
        if name == "relax.nn.avg_pool2d" and isinstance(args[0], Quant) and integer_avg_pool(value):
            return self.avg_pool(value, args[0])
        if isinstance(args[0] if args else None, Quant) and is_pass_through(value):
            return self.pass_through(value, args[0])
        if name == "relax.multiply" and len(args) == 2 and all(isinstance(a, Quant) for a in args) \
                and args[0] is not args[1]:
            return self.product(*args)
        if name == "relax.matmul" and all(isinstance(a, Quant) for a in args):
            return self.activation_matmul(*args)
        if name == "relax.concat" and isinstance(value.args[0], relax.Tuple):
            lowered = self.concat(value)
            if lowered is not None:
                return lowered
        chained = self.elementwise(var, value)
        if chained is not None:
            return chained
        return self.float_op(var, value)

    # -- integer ops ---------------------------------------------------------------------------------
    def quantize(self, x: object, scale: float, zero: int, dtype: str) -> Quant:
        info = np.iinfo(dtype)
        if isinstance(x, Elementwise):
            return self.table(x, scale, zero, dtype)
        if isinstance(x, Softmax):
            lowered = self.integer_softmax(x, scale, zero, dtype)
            if lowered is not None:
                return lowered
        if isinstance(x, LayerNorm):
            lowered = self.layer_norm_output(x, scale, zero, int(info.min), int(info.max), dtype)
            if lowered is not None:
                return lowered
        if isinstance(x, Concat):
            parts = [self.quantize(part, scale, zero, dtype) for part in x.parts]
            joined = self.builder.emit(relax.op.concat([part.var for part in parts], axis=x.axis))
            return Quant(joined, scale, zero, min(p.qmin for p in parts), max(p.qmax for p in parts), dtype)
        if isinstance(x, Quant):
            if (x.scale, x.zero, x.dtype) == (scale, zero, dtype):
                return x
            x = Linear((Term(x.var, np.float64(x.scale), np.int64(-x.zero)),))
        if isinstance(x, Linear):
            return self.requantize(x, scale, zero, int(info.min), int(info.max), dtype)
        q = self.builder.emit(relax.op.quantize(self.as_float(x), relax.const(np.float32(scale)),
                                                relax.const(np.array(zero, dtype=dtype)), axis=-1, out_dtype=dtype))
        return Quant(q, scale, zero, int(info.min), int(info.max), dtype)

    def requantize(self, x: Linear, scale: float, zero: int, qmin: int, qmax: int, dtype: str) -> Quant:
        """clamp(sum_i rescale(var_i + offset_i, s_i / s_out) + z_out), each rescale dyadic in int64, written
        (var_i * b_i + R_i) >> c_i with the constant R_i = offset_i * b_i + 2^(c_i - 1) (+ z_out * 2^c_i in
        one term): equal, as integers, to ((var_i + offset_i) * b_i + 2^(c_i - 1)) >> c_i + z_out, and one
        int32 x int32 -> int64 product per output (``vpmuldq`` once ``narrow_constants`` stores b as int32)."""
        if len(x.terms) > 1:
            summed = self._requantize_sum(x, scale, zero)
            if summed is not None:
                return self._clamped(summed, x, scale, zero, qmin, qmax, dtype)
        else:
            high = self._high_product(x.terms[0], scale, zero)
            if high is not None:
                return self._clamped(high, x, scale, zero, qmin, qmax, dtype)
        parts, zero_left = [], zero
        for term in x.terms:
            multiplier, shift = _dyadic_arrays(np.asarray(term.scale, np.float64) / scale)
            rounding = _rounding(term, multiplier, shift)
            with_zero = rounding + np.left_shift(zero_left, shift.astype(object))
            if zero_left and _fits_product(multiplier, with_zero):
                rounding, zero_left = with_zero, 0
            _check_rescale(term, multiplier, rounding)
            parts.append((term, multiplier, rounding, shift))
        total = self._rescaled_sum(parts)
        if zero_left:
            total = self.builder.emit(relax.op.add(total, _i64(zero_left)))
        return self._clamped(total, x, scale, zero, qmin, qmax, dtype)

    def _high_product(self, term: Term, scale: float, zero: int) -> relax.Var | None:
        """The rescale of one term to the output's scale in int32 (``_high_rescale``), + z_out; None where
        that is not exact (the caller rescales in int64)."""
        multiplier, shift = _dyadic_arrays(np.asarray(term.scale, np.float64) / scale)
        if _high_lift(term, shift) is None:
            return None
        return self._high_rescale(term, multiplier, shift, zero)

    def _high_rescale(self, term: Term, multiplier: np.ndarray, shift: np.ndarray, zero: int = 0) -> relax.Var:
        """((var + offset) * b + 2^(c-1)) >> c (+ ``zero``) in int32 through the high half of a 32 x 32-bit
        product, for a ``term`` that ``_high_lift`` accepts: with v = var + offset in int32 and k = c - 32 >= 1,
        (v * b + 2^(c-1)) >> c == (hi32(v * b) + 2^(k-1)) >> k, hi32(p) = p >> 32 (the 2^(c-1) is a whole
        2^(k-1) of the high half, and the low half, less than one unit of it, cannot carry past a multiple
        of 2^k). |v| < 2^31 and b < 2^31 keep |hi32| < 2^30, so adding the rounding (and z_out * 2^k where
        it fits) stays in int32. A shift c below 33 (a 4-bit layer's larger scales) first lifts v by
        2^(33-c), which scales the quotient's numerator and denominator alike. ``vpmuldq`` on the even and
        odd lanes makes hi32 for 16 outputs, and the rest runs 16 lanes wide instead of 8 in int64."""
        offset = np.asarray(term.offset, np.int64)
        lift = _high_lift(term, shift)
        k = shift + lift - 32
        rounding = np.left_shift(1, k.astype(object) - 1)
        with_zero = rounding + np.left_shift(int(zero), k.astype(object))
        folded = max(abs(int(v)) for v in np.ravel(with_zero)) < 2**30
        emit = self.builder.emit
        value = term.var if str(term.var.ty.dtype) == "int32" else emit(relax.op.astype(term.var, "int32"))
        if np.any(offset):
            value = emit(relax.op.add(value, _i32(offset)))
        if np.any(lift):
            value = emit(relax.op.left_shift(value, _i32(lift)))
        high = emit(relax.op.astype(emit(relax.op.right_shift(
            emit(relax.op.multiply(emit(relax.op.astype(value, "int64")), _i64(multiplier))), _i64(32))), "int32"))
        total = emit(relax.op.right_shift(emit(relax.op.add(high, _i32(with_zero if folded else rounding))), _i32(k)))
        return total if folded or not zero else emit(relax.op.add(total, _i32(zero)))

    def _requantize_sum(self, x: Linear, scale: float, zero: int) -> relax.Var | None:
        """A sum of terms (a residual add) rounded once: each term rescaled to ``SUM_FRACTION_BITS``
        fractional bits of the output's unit, t_i = ((var_i + offset_i) * b_i + 2^(c_i - k - 1)) >> (c_i - k),
        then (sum t_i + 2^(k-1) + z_out * 2^k) >> k. Rounding each term to whole units instead let two
        half-unit errors add up (EfficientNet-Lite0's residual adds: mean KL 0.0460 vs 0.0408 for the QDQ
        simulation). In int32 (each t_i by ``_high_rescale``) where every term allows it and the sum cannot
        leave int32, else in int64: the same integers. None where a term's shift is too small for the
        fraction bits or int64 could overflow (the caller rounds term by term)."""
        k = SUM_FRACTION_BITS
        parts = []
        for term in x.terms:
            multiplier, shift = _dyadic_arrays(np.asarray(term.scale, np.float64) / scale)
            if int(shift.min()) <= k:
                return None
            drop = shift - k
            rounding = _rounding(term, multiplier, drop)
            if not _fits_product(multiplier, rounding):
                return None
            parts.append((term, multiplier, rounding, drop))
        final = (1 << (k - 1)) + (int(zero) << k)
        emit = self.builder.emit
        if _sum_fits_int32(parts, final):
            total = None
            for term, multiplier, _, drop in parts:
                t = self._high_rescale(term, multiplier, drop)
                total = t if total is None else emit(relax.op.add(total, t))
            return emit(relax.op.right_shift(emit(relax.op.add(total, _i32(final))), _i32(k)))
        # each t_i is at most 2^31 * b_i / 2^(c_i - k) < 2^(62 + k - c_i) <= 2^61 in magnitude: the sum of a
        # few fits int64, checked with the constant
        worst = sum(np.max(multiplier.astype(object) * 2**31 + np.abs(rounding)) >> int(drop.min())
                    for _, multiplier, rounding, drop in parts)
        if worst + abs(final) >= 2**62:
            return None
        total = self._rescaled_sum(parts)
        return emit(relax.op.right_shift(emit(relax.op.add(total, _i64(np.int64(final)))), _i64(np.int64(k))))

    def _rescaled_sum(self, parts: list) -> relax.Var:
        """sum_i (var_i * b_i + R_i) >> shift_i in int64, for ``parts`` of (term, b, R, shift)."""
        emit = self.builder.emit
        total = None
        for term, multiplier, rounding, shift in parts:
            acc = emit(relax.op.multiply(emit(relax.op.astype(term.var, "int64")), _i64(multiplier)))
            acc = emit(relax.op.right_shift(emit(relax.op.add(acc, _i64(rounding.astype(np.int64)))), _i64(shift)))
            total = acc if total is None else emit(relax.op.add(total, acc))
        return total

    def _clamped(self, total: relax.Var, x: Linear, scale: float, zero: int, qmin: int, qmax: int,
                 dtype: str) -> Quant:
        """The requantized ``total`` (int64, or int32 from ``_high_product``) clamped to ``x``'s range on the
        output grid and cast to ``dtype``."""
        emit = self.builder.emit
        lo, hi = _integer_bounds(x.lo, x.hi, scale, zero, qmin, qmax)
        const = _i32 if str(total.ty.dtype) == "int32" else _i64
        total = emit(relax.op.minimum(emit(relax.op.maximum(total, const(lo))), const(hi)))
        return Quant(emit(relax.op.astype(total, dtype)), scale, zero, lo, hi, dtype)

    def layer(self, call: relax.Call, x: Quant, weight: Weight, name: str) -> Linear:
        """int conv2d / matmul with int32 accumulation; the input zero point becomes a per-channel offset.
        The accumulator is named after the layer (``name``, e.g. ``conv2d_3``), a name ``pack_int8_layers``
        and fusion carry into the kernel's name."""
        emit = self.builder.emit
        is_conv = op_name(call) == "relax.nn.conv2d"
        data = x.var
        if is_conv:
            attrs = call.attrs
            padding = [int(p) for p in attrs.padding]
            if any(padding) and x.zero != 0:  # pad explicitly with the zero point (padding stands for real 0.0)
                top, left, bottom, right = padding
                data = emit(relax.op.nn.pad(data, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(x.zero)))
                padding = [0, 0, 0, 0]
            acc = emit(relax.op.nn.conv2d(data, relax.const(weight.values), strides=attrs.strides,
                                          padding=padding, dilation=attrs.dilation, groups=int(attrs.groups),
                                          out_dtype="int32"), name_hint=name)
            weight_sums = weight.values.astype(np.int64).sum(axis=(1, 2, 3)).reshape(1, -1, 1, 1)
            scale = (x.scale * weight.scale).reshape(1, -1, 1, 1)
        else:
            acc = emit(relax.op.matmul(data, relax.const(weight.values), out_dtype="int32"), name_hint=name)
            weight_sums = weight.values.astype(np.int64).sum(axis=-2)
            scale = x.scale * weight.scale
        _check_accumulator(call, x, weight)
        offset = -x.zero * weight_sums
        reduce_axes = (1, 2, 3) if is_conv else (weight.values.ndim - 2,)
        bound = int(np.abs(weight.values.astype(np.int64)).sum(axis=reduce_axes).max()) * _code_bound(x)
        if "zero_point" in MUTATIONS:
            channel = np.unravel_index(np.argmax(np.abs(weight_sums)), weight_sums.shape)
            offset = offset.copy()
            offset[channel] -= weight_sums[channel]
        return Linear((Term(acc, scale, offset, bound),))

    def add(self, call: relax.Call, args: list) -> Linear | None:
        constants = [a for a in args if isinstance(a, tvm.ir.expr.GenericConst)]
        others = [a for a in args if not isinstance(a, tvm.ir.expr.GenericConst)]
        if len(constants) == 1 and isinstance(others[0], Linear) and len(others[0].terms) == 1 and (
                _unclamped(others[0]) or "constant_add_fold" in MUTATIONS):
            # clamp(y) + c is not clamp(y + c): only an accumulator with no ReLU / clip yet takes the constant
            (term,) = others[0].terms
            bias = np.round(constants[0].value.numpy().astype(np.float64) / term.scale).astype(np.int64)
            return Linear((replace(term, offset=term.offset + bias),), others[0].lo, others[0].hi)
        if not constants and all(isinstance(a, (Quant, Linear)) for a in args) and is_residual_add(call):
            terms = []
            for a in args:
                if isinstance(a, Quant):
                    terms.append(Term(a.var, np.float64(a.scale), np.int64(-a.zero)))
                elif a.lo == -math.inf and a.hi == math.inf:
                    terms.extend(a.terms)
                else:
                    return None
            return Linear(tuple(terms))
        return None

    def move(self, call: relax.Call, x: Linear) -> Linear | None:
        """A reshape / transpose of a sum not yet requantized, applied to each integer term (its real value
        moves with it): where every term's scale and offset are one number, or, for a reshape that keeps the
        last axis, vectors along that axis."""
        before, after = ([int(d) for d in t.ty.shape] for t in (call.args[0], call))
        keeps_last = op_name(call) == "relax.reshape" and before[-1:] == after[-1:]
        terms = []
        for term in x.terms:
            sizes = {np.size(term.scale), np.size(term.offset)}
            along_last = keeps_last and max(np.ndim(term.scale), np.ndim(term.offset)) <= 1
            if sizes != {1} and not along_last:
                return None
            moved = relax.Call(call.op, [term.var] + list(call.args[1:]), call.attrs, call.ty_args)
            terms.append(replace(term, var=self.builder.emit(moved)))
        return replace(x, terms=tuple(terms), materialised={})

    def scale(self, args: list, divide: bool = False) -> Linear | None:
        """A sum not yet requantized times (or over) a positive constant (attention's 1/sqrt(d)): a change of
        scale."""
        constants = [a for a in args if isinstance(a, tvm.ir.expr.GenericConst)]
        linear = [a for a in args if isinstance(a, Linear)]
        if len(constants) != 1 or len(linear) != 1 or constants[0].value.numpy().size != 1 or \
                (divide and not isinstance(args[0], Linear)):
            return None
        factor = float(constants[0].value.numpy())
        factor = 1.0 / factor if divide and factor != 0 else factor
        if not (math.isfinite(factor) and factor > 0):
            return None
        x = linear[0]
        return Linear(tuple(replace(t, scale=t.scale * factor) for t in x.terms), x.lo * factor, x.hi * factor)

    def mask(self, call: relax.Call, args: list) -> Masked | None:
        """Scores plus ``where(keep, 0, -big)``: the mask of an attention softmax."""
        scores = [a for a in args if isinstance(a, Linear)]
        others = [a for a in call.args if not isinstance(self.values.get(a), Linear)]
        if len(scores) != 1 or len(others) != 1 or not isinstance(others[0], relax.Var):
            return None
        source = self.originals.get(others[0])
        if not is_additive_mask(source):
            return None
        keep = self.values.get(source.args[0], source.args[0])
        if not isinstance(keep, relax.Expr) or str(keep.ty.dtype) != "bool":
            return None
        return Masked(scores[0], keep, self.values[others[0]])

    def softmax_fits(self, call: relax.Call, x: Linear | Masked) -> bool:
        """One int32 term of one scale along the last axis, small enough for ``integer_softmax``."""
        scores = x.scores if isinstance(x, Masked) else x
        if len(scores.terms) != 1 or not _unclamped(scores) or int(call.attrs.axis) not in (-1, len(call.ty.shape) - 1):
            return False
        (term,) = scores.terms
        return np.size(term.scale) == 1 and str(term.var.ty.dtype) == "int32" and \
            _term_reach(term) < integer_softmax.MAX_SCORE

    def integer_softmax(self, x: Softmax, scale: float, zero: int, dtype: str) -> Quant | None:
        """``passes.integer_softmax`` of the scores, quantized to ``scale`` / ``zero``; None where it cannot be."""
        info = np.iinfo(dtype)
        scores, keep = (x.scores.scores, x.scores.keep) if isinstance(x.scores, Masked) else (x.scores, None)
        (term,) = scores.terms
        if not integer_softmax.fits(_term_reach(term), float(term.scale), scale, zero):
            return None
        var = term.var
        if np.any(term.offset):
            var = self.builder.emit(relax.op.add(var, _i32(term.offset)))
        q = integer_softmax.emit_softmax(self.builder, var, float(term.scale), keep, scale, zero,
                                         int(info.min), int(info.max), dtype)
        return Quant(q, scale, zero, int(info.min), int(info.max), dtype)

    def layer_norm(self, var: relax.Var, call: relax.Call, x: object) -> LayerNorm | None:
        """A layernorm over the last axis, with constant gamma and beta, of an integer tensor or sum."""
        if isinstance(x, Quant):
            x = Linear((Term(x.var, np.float64(x.scale), np.int64(-x.zero), _code_bound(x)),))
        ndim = len(call.ty.shape)
        if not isinstance(x, Linear) or [int(a) % ndim for a in call.attrs.axes] != [ndim - 1]:
            return None
        if not (bool(call.attrs.center) and bool(call.attrs.scale)) or not all(
                isinstance(a, tvm.ir.expr.GenericConst) for a in call.args[1:3]):
            return None
        gamma, beta = (np.asarray(a.value.numpy(), np.float64).reshape(-1) for a in call.args[1:3])
        n = int(call.ty.shape[-1])
        grid = sum(float(np.max(np.abs(t.scale))) * _term_reach(t) for t in x.terms) / integer_layer_norm.GRID_LIMIT
        if not (gamma.size == beta.size == n < integer_layer_norm.MAX_ROW and grid > 0 and math.isfinite(grid)):
            return None
        fine = integer_layer_norm.fine_grid(gamma, beta, n)
        if not integer_layer_norm.fits(gamma, beta, fine, n):
            return None
        key = self.layer_norm_keys[var]
        self.layer_norm_grids[key] = grid
        return LayerNorm(x, call, key, gamma, beta, {"grid": grid})

    def normalized(self, x: LayerNorm) -> relax.Var:
        """u = (x - mean) / std in 16 fractional bits (int32), from x requantized once to its grid."""
        if "normalized" not in x.materialised:
            grid, limit = x.materialised["grid"], integer_layer_norm.GRID_LIMIT
            v = self.requantize(x.x, grid, 0, -limit, limit, "int32")
            x.materialised["normalized"] = integer_layer_norm.emit_normalized(
                self.builder, v.var, grid, float(x.call.attrs.epsilon))
        return x.materialised["normalized"]

    def layer_norm_output(self, x: LayerNorm, scale: float, zero: int, qmin: int, qmax: int,
                          dtype: str) -> Quant | None:
        """gamma u + beta on the grid ``scale`` / ``zero``: one affine per channel of the normalized values."""
        if not integer_layer_norm.fits(x.gamma, x.beta, scale, int(x.call.ty.shape[-1])):
            return None
        q = integer_layer_norm.emit_affine(self.builder, self.normalized(x), x.gamma, x.beta, scale, zero,
                                           qmin, qmax, dtype)
        return Quant(q, scale, zero, qmin, qmax, dtype)

    def on_fine_grid(self, original: relax.Expr, lowered: object) -> object:
        """A float operand of an integer residual add (the embeddings' layernorm ahead of a transformer's
        first block) on an int32 grid of ``FINE_HEADROOM`` times the range its entry quantize was calibrated
        to, in 2^30 steps (rounded in float64, exactly); anything else as it is."""
        if not (isinstance(original, relax.Var) and isinstance(lowered, relax.Var) and original in self.entry_scales):
            return lowered
        scale, zero, dtype = self.entry_scales[original]
        info = np.iinfo(dtype)
        top = scale * max(abs(info.min - zero), abs(info.max - zero)) * FINE_HEADROOM
        limit = integer_layer_norm.GRID_LIMIT
        grid = top / limit
        emit = self.builder.emit
        wide = emit(relax.op.astype(lowered, "float64"))  # float64 rounds to every one of 2^30 steps exactly
        steps = emit(relax.op.floor(emit(relax.op.add(emit(relax.op.divide(wide, relax.const(grid, "float64"))),
                                                      relax.const(0.5, "float64")))))
        steps = emit(relax.op.clip(steps, -limit, limit))
        return Quant(emit(relax.op.astype(steps, "int32")), grid, 0, -limit, limit, "int32")

    def fine(self, x: LayerNorm) -> Quant:
        """The layernorm's value on its fine int32 grid (``integer_layer_norm.fine_grid``), for readers that
        want the value rather than an 8-bit code of it (the next residual add)."""
        if "fine" not in x.materialised:
            limit = integer_layer_norm.GRID_LIMIT
            grid = integer_layer_norm.fine_grid(x.gamma, x.beta, int(x.call.ty.shape[-1]))
            fine = self.layer_norm_output(x, grid, 0, -limit, limit, "int32")
            x.materialised["fine"] = fine
            self.fine_values[x.key] = [fine.var.name, fine.scale]
        return x.materialised["fine"]

    def clamp(self, call: relax.Call, x: object) -> object | None:
        if op_name(call) == "relax.nn.relu":
            lo, hi = 0.0, math.inf
        else:
            lo, hi = float(call.args[1].value), float(call.args[2].value)
        original = call.args[0]
        if isinstance(x, Quant) and str(original.ty.dtype) == x.dtype:  # clip of the integers themselves
            return self._int_clamp(x, max(x.qmin, int(lo)), min(x.qmax, int(hi) if hi != math.inf else x.qmax))
        if isinstance(x, Quant):  # clip in real units: exact as integer bounds only where they are codes
            if not (_on_grid(lo, x) and _on_grid(hi, x)):
                return None  # an elementwise function: a table evaluates it exactly
            return self._int_clamp(x, *_integer_bounds(lo, hi, x.scale, x.zero, x.qmin, x.qmax))
        if isinstance(x, Linear):
            return replace(x, lo=max(x.lo, lo), hi=min(x.hi, hi), materialised={})
        return None

    def _int_clamp(self, x: Quant, lo: int, hi: int) -> Quant:
        emit = self.builder.emit
        dtype = x.dtype
        q = x.var
        if lo > x.qmin:
            q = emit(relax.op.maximum(q, relax.const(np.array(lo, dtype=dtype))))
        if hi < x.qmax:
            q = emit(relax.op.minimum(q, relax.const(np.array(hi, dtype=dtype))))
        return replace(x, var=q, qmin=lo, qmax=hi)

    def mean(self, call: relax.Call, x: Quant) -> Linear:
        shape = [int(d) for d in call.args[0].ty.shape]
        axes = [int(a) % len(shape) for a in call.attrs.axis]
        count = int(np.prod([shape[a] for a in axes]))
        total = self.builder.emit(relax.op.sum(relax.op.astype(x.var, "int32"), axis=axes,
                                               keepdims=bool(call.attrs.keepdims)))
        return Linear((Term(total, np.float64(x.scale / count), np.int64(-x.zero * count), count * _code_bound(x)),))

    def avg_pool(self, call: relax.Call, x: Quant) -> Linear:
        """Average pooling as a window sum (a depthwise convolution with weights 1, int32) over the divisor."""
        attrs = call.attrs
        kh, kw = (int(k) for k in attrs.pool_size)
        channels = int(call.args[0].ty.shape[1])
        data = x.var
        top, left, bottom, right = (int(p) for p in attrs.padding)
        if top or left or bottom or right:  # counted padding stands for real 0.0: the zero point
            data = self.builder.emit(relax.op.nn.pad(data, [0, 0, 0, 0, top, bottom, left, right],
                                                     pad_value=float(x.zero)))
        ones = relax.const(np.ones((channels, 1, kh, kw), np.int8))
        total = self.builder.emit(relax.op.nn.conv2d(data, ones, strides=attrs.strides, groups=channels,
                                                     out_dtype="int32"))
        count = kh * kw
        return Linear((Term(total, np.float64(x.scale / count), np.int64(-x.zero * count), count * _code_bound(x)),))

    def product(self, a: Quant, b: Quant) -> Linear:
        """(q_a - z_a)(q_b - z_b) in int32, real value s_a s_b times it (one dyadic rescale when quantized)."""
        product = self.builder.emit(relax.op.multiply(self._centred(a), self._centred(b)))
        return Linear((Term(product, np.float64(a.scale * b.scale), np.int64(0),
                            _centred_bound(a) * _centred_bound(b)),))

    def activation_matmul(self, a: Quant, b: Quant) -> Linear:
        """(q_a - z_a) @ (q_b - z_b) summed in int32, real value s_a s_b times it: a matmul of two integer
        tensors (attention's Q x K^T, probabilities x V); one dyadic rescale when its output is quantized,
        else dequantized from the sums."""
        depth = int(a.var.ty.shape[-1])
        bound = depth * _centred_bound(a) * _centred_bound(b)
        if bound >= 2**31:
            raise PassError(f"lower_integer: a matmul of depth {depth} of {a.dtype} x {b.dtype} codes may "
                            f"overflow int32 (bound {bound})")
        sums = self.builder.emit(relax.op.matmul(self._centred(a), self._centred(b), out_dtype="int32"))
        return Linear((Term(sums, np.float64(a.scale * b.scale), np.int64(0), bound),))

    def _centred(self, x: Quant) -> relax.Var:
        """q_x - z_x in int32."""
        wide = self.builder.emit(relax.op.astype(x.var, "int32"))
        return self.builder.emit(relax.op.subtract(wide, relax.const(np.int32(x.zero)))) if x.zero else wide

    def concat(self, call: relax.Call) -> object | None:
        """Integer parts of one scale concatenate as they are; parts of different scales wait for the
        output's quantize, which requantizes each one to it."""
        parts = [self.values.get(f, f) for f in call.args[0].fields]
        axis = int(call.attrs.axis)
        if not all(isinstance(p, Quant) for p in parts):
            return None
        if len({(p.scale, p.zero, p.dtype) for p in parts}) == 1:
            joined = self.builder.emit(relax.op.concat([p.var for p in parts], axis=axis))
            return replace(parts[0], var=joined, qmin=min(p.qmin for p in parts), qmax=max(p.qmax for p in parts))
        return Concat(tuple(parts), axis)

    def elementwise(self, var: relax.Var, value: relax.Expr) -> Elementwise | None:
        """An elementwise op of one integer tensor (directly or through earlier such ops), deferred."""
        inputs = {a: self.values.get(a) for a in var_args(value)}
        sources = {}
        for arg, lowered in inputs.items():
            if isinstance(lowered, Elementwise):
                sources[lowered.source_var] = lowered
            elif isinstance(lowered, Quant):
                sources[arg] = lowered
            else:
                return None
        if len(sources) != 1:
            return None
        (source_var, found), = sources.items()
        if source_of_call(value, {a: source_var for a in inputs}) is None:
            return None
        chain = tuple(b for lowered in inputs.values() if isinstance(lowered, Elementwise) for b in lowered.chain)
        chain = tuple(dict.fromkeys(chain)) + ((var, value),)
        source = found.source if isinstance(found, Elementwise) else found
        return Elementwise(source, source_var, chain, var)

    def table(self, x: Elementwise, scale: float, zero: int, dtype: str) -> Quant:
        """The chain as a lookup table over every integer value its source can take (exact)."""
        src = x.source
        codes = np.arange(np.iinfo(src.dtype).min, np.iinfo(src.dtype).max + 1, dtype=np.int64)
        real = evaluate(_in_order(x.chain), x.source_var, src.scale * (codes - src.zero).astype(np.float64), x.var)
        info = np.iinfo(dtype)
        quantized = np.clip(np.round(real / scale) + zero, info.min, info.max)
        table = relax.const(np.nan_to_num(quantized, nan=zero).astype(dtype))
        index = self.builder.emit(relax.op.astype(src.var, "int32"))
        if codes[0]:
            index = self.builder.emit(relax.op.subtract(index, relax.const(np.int32(codes[0]))))
        looked_up = self.builder.emit(relax.op.take(table, index, axis=0, mode="clip"))
        return Quant(looked_up, scale, zero, int(info.min), int(info.max), dtype)

    def pass_through(self, call: relax.Call, x: Quant) -> Quant:
        if op_name(call) == "relax.nn.pad":
            new = relax.op.nn.pad(x.var, [int(p) for p in call.attrs.pad_width], pad_value=float(x.zero))
        else:
            new = relax.Call(call.op, [x.var] + list(call.args[1:]), call.attrs, call.ty_args)
        return replace(x, var=self.builder.emit(new))

    # -- float ---------------------------------------------------------------------------------------
    def float_op(self, var: relax.Var, value: relax.Expr) -> relax.Var:
        """Keep ``value`` in float on dequantized inputs; it is an island if an integer value feeds it (the
        float arithmetic that turns an accumulator into its real value for it belongs to the island too)."""
        integer_inputs = any(isinstance(self.values.get(a), INTEGER_VALUES) for a in var_args(value))
        self.boundary = []
        new_value = map_vars(value, lambda a: self.as_float(self.values[a]) if a in self.values else a)
        boundary, self.boundary = self.boundary, None
        if isinstance(new_value, relax.Tuple):
            return new_value
        new_var = self.builder.emit(new_value)
        if integer_inputs or any(v in self.island_vars for v in var_args(value)):
            reason = self.island_reason(var, value)
            for island in boundary + [new_var]:
                self.islands[island.name] = reason
            self.island_vars.add(var)
        return new_var

    def island_reason(self, var: relax.Var, value: relax.Expr) -> str:
        """Why an op stays in float: the policy kept its layer in float, or it has no integer form."""
        name = op_name(value) or type(value).__name__
        upstream = [self.island_reasons_by_var[a] for a in var_args(value) if a in self.island_reasons_by_var]
        has_integer_form = (is_pass_through(value) or source_of_call(value, {}) is not None
                            or name in ("relax.add", "relax.multiply", "relax.concat", "relax.mean"))
        if name in ("relax.nn.conv2d", "relax.matmul") and isinstance(value.args[1], tvm.ir.expr.GenericConst):
            reason = "policy: layer kept in float (quantize=False)"
        elif name in self.float_ops:
            reason = f"policy: {name} kept in float (float_ops)"
        elif not has_integer_form:
            reason = f"no integer form: {name}"
        elif upstream:  # an op with an integer form, in float because its input is
            reason = upstream[0]
        else:
            reason = f"feeds float ops only: {name} of an accumulator no integer op reads"
        self.island_reasons_by_var[var] = reason
        return reason

    def as_float(self, value: object) -> relax.Expr:
        emit = self.builder.emit
        if isinstance(value, Quant):
            if id(value) not in self.floats:
                zero = relax.const(np.array(value.zero, dtype=value.dtype))
                self.floats[id(value)] = emit(relax.op.dequantize(
                    value.var, relax.const(np.float32(value.scale)), zero, axis=-1, out_dtype="float32"))
            return self.floats[id(value)]
        if isinstance(value, Linear):
            if "float" not in value.materialised:
                value.materialised["float"] = self._linear_to_float(value)
            return value.materialised["float"]
        if isinstance(value, Elementwise):
            if id(value) not in self.floats:
                mapping = {value.source_var: self.as_float(value.source)}
                for var, call in _in_order(value.chain):
                    mapping[var] = self._boundary(emit(map_vars(call, lambda a: mapping.get(a, a))))
                self.floats[id(value)] = mapping[value.var]
            return self.floats[id(value)]
        if isinstance(value, Concat):
            return self._boundary(emit(relax.op.concat([self.as_float(p) for p in value.parts], axis=value.axis)))
        if isinstance(value, Masked):
            return self._boundary(emit(relax.op.add(self.as_float(value.scores), value.mask)))
        if isinstance(value, LayerNorm):
            return self.as_float(self.fine(value))
        if isinstance(value, Softmax):
            if id(value) not in self.floats:
                self.floats[id(value)] = self._boundary(emit(relax.Call(
                    value.call.op, [self.as_float(value.scores)], value.call.attrs, value.call.ty_args)))
            return self.floats[id(value)]
        if isinstance(value, Weight):
            raise PassError("lower_integer: an integer weight is read by an op that is not a quantized layer")
        if isinstance(value, relax.Tuple):
            return relax.Tuple([self.as_float(self.values.get(f, f)) for f in value.fields])
        return value

    def _linear_to_float(self, value: Linear) -> relax.Var:
        emit = self.builder.emit
        total = None
        for term in value.terms:
            acc = term.var
            if np.any(term.offset):
                if str(acc.ty.dtype) != "int32":
                    acc = emit(relax.op.astype(acc, "int32"))
                acc = emit(relax.op.add(acc, relax.const(np.asarray(term.offset, np.int32))))
            scale, axis = _per_axis(term.scale)
            real = emit(relax.op.dequantize(acc, relax.const(scale), relax.const(np.int32(0)), axis=axis,
                                            out_dtype="float32"))
            total = real if total is None else self._boundary(emit(relax.op.add(total, real)))
        if value.lo != -math.inf or value.hi != math.inf:
            total = self._boundary(emit(relax.op.clip(total, max(value.lo, -3.4e38), min(value.hi, 3.4e38))))
        return total

    def _boundary(self, var: relax.Var) -> relax.Var:
        if self.boundary is not None:
            self.boundary.append(var)
        return var


def _in_order(chain: tuple) -> list:
    """The bindings of a chain (merged from several branches) once each, in program order."""
    return list(dict.fromkeys(chain))


def _on_grid(bound: float, x: Quant) -> bool:
    """A clamp bound that is one of ``x``'s codes, or outside its range (fuzz seed 1143: clip(x, -2.28, 0.53)
    on an input grid rounded the bounds by up to half a step, 2 LSB off the simulation after hardsigmoid)."""
    if math.isinf(bound):
        return True
    code = bound / x.scale + x.zero
    return code <= x.qmin or code >= x.qmax or abs(code - round(code)) < 1e-6


def _unclamped(value: Linear) -> bool:
    return value.lo == -math.inf and value.hi == math.inf


def _scalar(expr: relax.Expr) -> float:
    return float(expr.value.numpy())


def _i64(values) -> relax.Constant:
    return relax.const(np.asarray(values, dtype=np.int64), "int64")


def _i32(values) -> relax.Constant:
    return relax.const(np.asarray(values, dtype=np.int64).astype(np.int32), "int32")


def _code_bound(x: Quant) -> int:
    """The largest |q| of ``x``'s codes."""
    return max(abs(x.qmin), abs(x.qmax))


def _centred_bound(x: Quant) -> int:
    """The largest |q - z| of ``x``'s codes."""
    return max(abs(x.qmin - x.zero), abs(x.qmax - x.zero))


def _term_reach(term: Term) -> int:
    """The largest |var + offset| of ``term``: its bound plus its largest offset."""
    return _var_bound(term) + int(np.max(np.abs(term.offset)))


def _var_bound(term: Term) -> int:
    """The largest |var| of ``term``: its own bound, else its dtype's range."""
    if term.bound is not None:
        return int(term.bound)
    info = np.iinfo(str(term.var.ty.dtype))
    return max(abs(int(info.min)), abs(int(info.max)))


def _high_lift(term: Term, shift: np.ndarray) -> np.ndarray | None:
    """The left shift l = max(0, 33 - c) per channel that ``_high_rescale`` gives v = var + offset, or None
    where the lifted v might not fit int32 (checked per channel: a dead channel's huge offset does not send
    the whole layer to int64)."""
    offset = np.asarray(term.offset, np.int64)
    lift = np.maximum(33 - shift, 0)
    reach = (_var_bound(term) + np.abs(offset).astype(object)) * np.left_shift(1, lift.astype(object))
    if np.max(np.broadcast_to(reach, np.broadcast_shapes(reach.shape, lift.shape))) >= 2**31:
        return None
    return lift


def _sum_fits_int32(parts: list, final: int) -> bool:
    """Whether each term of a residual sum (term, b, R, drop) has an int32 rescale (``_high_lift``) and
    sum_i |t_i| + |final| < 2^31, |t_i| <= ((|var| + |offset|) * b + 2^(drop - 1)) >> drop per channel."""
    worst = abs(final)
    for term, multiplier, _, drop in parts:
        if _high_lift(term, drop) is None:
            return False
        offset = np.abs(np.asarray(term.offset, np.int64)).astype(object)
        reach = ((_var_bound(term) + offset) * multiplier.astype(object)
                 + np.left_shift(1, drop.astype(object) - 1)) >> drop.astype(object)
        worst += int(np.max(reach))
    return worst < 2**31


SUM_FRACTION_BITS = 16
"""Fractional bits (of the output's unit) each term of a residual add keeps until the sum is rounded once."""


def _dyadic_arrays(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise dyadic(b, c) of an array of rescale factors."""
    pairs = [dyadic(float(s)) for s in scales.ravel()]
    shape = scales.shape
    return (np.array([p.b for p in pairs], np.int64).reshape(shape),
            np.array([p.c for p in pairs], np.int64).reshape(shape))


def _per_axis(scale: np.ndarray) -> tuple[np.ndarray, int]:
    """A broadcastable scale as the 1-D vector and axis ``dequantize`` takes (scalar: axis -1)."""
    scale = np.asarray(scale, np.float32)
    if scale.size == 1:
        return scale.reshape(()), -1
    axis = next(i for i, d in enumerate(scale.shape) if d > 1)
    return scale.reshape(-1), axis - scale.ndim


def _integer_bounds(lo: float, hi: float, scale: float, zero: int, qmin: int, qmax: int) -> tuple[int, int]:
    """A clamp to [lo, hi] in real units as integer bounds on a tensor of ``scale`` / ``zero``."""
    low = qmin if lo == -math.inf else max(qmin, zero + int(np.round(lo / scale)))
    high = qmax if hi == math.inf else min(qmax, zero + int(np.round(hi / scale)))
    return low, high


def _rounding(term: Term, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """offset * b + 2^(shift - 1), as Python integers (object arrays) until the bound is checked: offset * b
    may pass int64."""
    return (np.asarray(term.offset, np.int64).astype(object) * multiplier.astype(object)
            + np.left_shift(1, shift.astype(object) - 1))


def _fits_product(multiplier: np.ndarray, rounding: np.ndarray) -> bool:
    """Whether var * b + R stays inside int64 for every int32 var (|var| <= 2^31)."""
    worst = np.broadcast_arrays(np.asarray(multiplier).astype(object) * 2**31 + np.abs(rounding.astype(object)))[0]
    return max(worst.ravel().tolist()) < 2**63


def _check_rescale(term: Term, multiplier: np.ndarray, rounding: np.ndarray) -> None:
    """Refuse a requantize whose int64 sum var * b + R could overflow."""
    if not _fits_product(multiplier, rounding):
        raise PassError(f"lower_integer: a requantize of {term.var.name} could overflow int64 (offset up to "
                        f"{np.max(np.abs(term.offset)):.3g}, multiplier {np.max(multiplier)}); the weight "
                        "scales of its layer are too small for its bias")


def _check_accumulator(call: relax.Call, x: Quant, weight: Weight) -> None:
    """Refuse a layer whose worst-case int32 accumulation could overflow (DESIGN.md section 2)."""
    reduce_axes = (1, 2, 3) if weight.values.ndim == 4 else (weight.values.ndim - 2,)
    peak = np.abs(weight.values.astype(np.int64)).sum(axis=reduce_axes).max()
    if peak * max(abs(x.qmin - x.zero), abs(x.qmax - x.zero)) >= 2**31:
        raise PassError(f"lower_integer: {op_name(call)} could overflow its int32 accumulator "
                        f"(sum |W| = {peak}); split the reduction or lower its bit width")
