"""A numpy reference interpreter of Relax graphs, to check the compiled integer executable bit for bit.

    trace = interpret(mod, {"input": x})       # every variable of main, by name, as numpy
    trace.outputs                              # main's results

It runs ``main`` of a module before ``legalize_ops`` (typically straight after ``lower_integer``) one binding
at a time. Integer ops are exact by construction: conv2d and matmul are computed in float64, which is exact
for int8 x int8 sums of fewer than 2^37 terms (and on float32 operands leaves one rounding, to float32); the
dyadic requantize is int64 arithmetic;
``quantize`` / ``dequantize`` follow TVM's legalization (float32 ``x / s``, round half to even, + z, clamp).
Float islands (softmax, layernorm, GELU ...) run in float32 numpy and can differ from the compiled code in
the last bit; ``overrides`` replaces chosen variables by given values (the compiled island outputs), so
everything integer downstream can still be compared exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import tvm
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import erf
from tvm import relax

from passes import integer_layer_norm, integer_softmax

from ..errors import CompilerError


class ReferenceError(CompilerError):
    """The interpreter met an op it does not know."""


@dataclass
class Trace:
    """Every variable's value (by name) and main's outputs, flattened."""

    values: dict[str, np.ndarray]
    outputs: list[np.ndarray]
    by_var: dict = field(default_factory=dict, repr=False)  # every value by its relax.Var (names may repeat)


def interpret(mod: tvm.IRModule, inputs: Mapping[str, np.ndarray],
              overrides: Mapping[str | relax.Var, np.ndarray] | None = None,
              observed: dict | None = None,
              operands: Mapping[relax.Call, Callable[[list], list]] | None = None) -> Trace:
    """Run ``mod["main"]`` on ``inputs`` (by parameter name) in numpy; ``overrides`` pins variables by name
    (or by ``relax.Var``, for graphs whose names repeat). With ``observed`` (a dict), each overridden
    variable is still computed from its (possibly overridden) inputs and that value, the one the override
    replaced, is recorded in ``observed`` under the key the override used: ``compiler.quantization.oracle``
    feeds every op the integer executable's inputs this way and compares what the op computes. ``operands``
    maps calls of main to a function of their evaluated arguments that returns the arguments the call
    computes with (``report.format_report`` stores each layer's input and weight in a number format)."""
    func = mod["main"]
    overrides = overrides or {}
    by_var = {k: v for k, v in overrides.items() if isinstance(k, relax.Var)}
    by_name = {k: v for k, v in overrides.items() if isinstance(k, str)}
    env: dict[relax.Var, Any] = {}
    for param in func.params:
        if param.name not in inputs:
            raise ReferenceError(f"no value for input '{param.name}'")
        env[param] = np.asarray(inputs[param.name])
    values: dict[str, np.ndarray] = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            var, name = binding.var, binding.var.name
            key = var if var in by_var else name if name in by_name else None
            if key is None and operands is not None and binding.value in operands:
                args = operands[binding.value]([_evaluate(a, env, mod) for a in binding.value.args])
                result = _apply(binding.value, args)
            elif key is None:
                result = _evaluate(binding.value, env, mod)
            else:
                if observed is not None:
                    observed[key] = _evaluate(binding.value, env, mod)
                result = by_var[key] if key is var else by_name[key]
            env[var] = result
            if isinstance(result, np.ndarray):
                values[name] = result
    output = _evaluate(func.body.body, env, mod)
    return Trace(values, _flatten(output), env)


def _flatten(value: Any) -> list[np.ndarray]:
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _flatten(item)]
    return [value]


def _evaluate(expr: relax.Expr, env: Mapping[relax.Var, Any], mod: tvm.IRModule | None = None) -> Any:
    if isinstance(expr, relax.Var):
        return env[expr]
    if isinstance(expr, tvm.ir.expr.GenericConst):
        return expr.value.numpy()
    if isinstance(expr, relax.Tuple):
        return tuple(_evaluate(f, env, mod) for f in expr.fields)
    if isinstance(expr, relax.TupleGetItem):
        return _evaluate(expr.tuple_value, env, mod)[expr.index]
    if isinstance(expr, relax.ShapeExpr):
        return tuple(int(v) for v in expr.values)
    if isinstance(getattr(expr, "value", None), (int, float)):  # IntImm / FloatImm arguments
        return expr.value
    if isinstance(expr, relax.Call) and expr.op.same_as(_CALL_TIR) and mod is not None:
        return _kernel(mod, expr, [_evaluate(a, env, mod) for a in expr.args[1].fields])
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return _apply(expr, [_evaluate(a, env, mod) for a in expr.args])
    raise ReferenceError(f"the reference interpreter cannot evaluate {type(expr).__name__}")


_CALL_TIR = tvm.ir.Op.get("relax.call_tir")


def _kernel(mod: tvm.IRModule, call: relax.Call, args: list) -> np.ndarray:
    """A kernel the lowering wrote itself (a ``call_tir``), through its numpy twin: the integer softmax and
    layernorm."""
    attrs = mod[call.args[0]].attrs or {}
    if integer_softmax.PARAMS_ATTRIBUTE in attrs:
        params = {k: str(v) if k == "dtype" else int(v) for k, v in attrs[integer_softmax.PARAMS_ATTRIBUTE].items()}
        return integer_softmax.reference(args[0], args[1] if len(args) > 1 else None,
                                         integer_softmax.Params(**params))
    if integer_layer_norm.PARAMS_ATTRIBUTE in attrs:
        params = {k: int(v) for k, v in attrs[integer_layer_norm.PARAMS_ATTRIBUTE].items()}
        return integer_layer_norm.reference(args[0], integer_layer_norm.Params(**params))
    raise ReferenceError(f"the reference interpreter has no numpy twin for kernel {call.args[0].name_hint}")


def _apply(call: relax.Call, args: list) -> Any:
    """The op of ``call`` on evaluated ``args``, cast to the call's declared dtype."""
    rule = _RULES.get(call.op.name)
    if rule is None:
        raise ReferenceError(f"the reference interpreter has no rule for {call.op.name}")
    out_dtype = str(call.ty.dtype) if isinstance(call.ty, relax.TensorType) else None
    result = rule(call.attrs, *args)
    if out_dtype and isinstance(result, np.ndarray) and result.dtype != out_dtype:
        result = result.astype(out_dtype)
    return result


# -- rules: (attrs, *args) -> value; the caller casts to the call's declared dtype -------------------------

def _per_axis(param: np.ndarray, data: np.ndarray, axis: int) -> np.ndarray:
    if param.size == 1:
        return param.reshape(())
    shape = [1] * data.ndim
    shape[axis % data.ndim] = -1
    return param.reshape(shape)


def _quantize(attrs, x, scale, zero):
    axis = int(attrs.axis)
    info = np.iinfo(str(attrs.out_dtype))
    scaled = x.astype(np.float32) / _per_axis(scale.astype(np.float32), x, axis)
    rounded = np.round(scaled) + _per_axis(zero, x, axis).astype(np.float32)
    return np.clip(rounded, info.min, info.max).astype(str(attrs.out_dtype))


def _dequantize(attrs, x, scale, zero):
    axis = int(attrs.axis)
    shifted = x.astype(np.int32) - _per_axis(zero, x, axis).astype(np.int32)
    return shifted.astype(np.float32) * _per_axis(scale.astype(np.float32), x, axis)


def _windows(x: np.ndarray, attrs, window: tuple[int, int], pad_value) -> np.ndarray:
    """The [N, C, OH, OW, kh, kw] sliding windows of NCHW ``x`` under ``attrs``' padding, strides, dilation."""
    top, left, bottom, right = (int(p) for p in attrs.padding)
    (sh, sw), (dh, dw), (kh, kw) = (int(s) for s in attrs.strides), (int(d) for d in attrs.dilation), window
    xp = np.pad(x, [(0, 0), (0, 0), (top, bottom), (left, right)], constant_values=pad_value)
    windows = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return windows[:, :, ::sh, ::sw, ::dh, ::dw]


def _conv2d(attrs, x, w):
    if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW":
        raise ReferenceError("the reference conv2d supports NCHW / OIHW only")
    groups = int(attrs.groups)
    compute = np.float64  # exact for integers; for float32, exact products and one rounding at the end
    out_c, in_per_group, kh, kw = w.shape
    windows = _windows(x.astype(compute), attrs, (kh, kw), 0)
    n, c, oh, ow = windows.shape[:4]
    windows = windows.reshape(n, groups, in_per_group, oh, ow, kh, kw)
    weight = w.astype(compute).reshape(groups, out_c // groups, in_per_group, kh, kw)
    out = np.einsum("ngihwab,goiab->ngohw", windows, weight, optimize=True)
    return out.reshape(n, out_c, oh, ow)


def _matmul(attrs, a, b):
    return np.matmul(a.astype(np.float64), b.astype(np.float64))  # as ``_conv2d``: cast to the declared dtype


def _pad(attrs, x):
    widths = [int(p) for p in attrs.pad_width]
    pairs = [(widths[2 * i], widths[2 * i + 1]) for i in range(x.ndim)]
    return np.pad(x, pairs, constant_values=np.asarray(float(attrs.pad_value)).astype(x.dtype))


def _max_pool2d(attrs, x):
    if str(attrs.layout) != "NCHW" or bool(attrs.ceil_mode):
        raise ReferenceError("the reference max_pool2d supports NCHW without ceil_mode only")
    lowest = np.iinfo(x.dtype).min if np.issubdtype(x.dtype, np.integer) else -np.inf
    window = tuple(int(p) for p in attrs.pool_size)
    return _windows(x, attrs, window, lowest).max(axis=(-2, -1))


def _axes(attrs, ndim):
    return None if attrs.axis is None else tuple(int(a) % ndim for a in attrs.axis)


def _softmax(attrs, x):
    shifted = x - x.max(axis=int(attrs.axis), keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=int(attrs.axis), keepdims=True)


def _layer_norm(attrs, x, gamma, beta):
    axes = tuple(int(a) % x.ndim for a in attrs.axes)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    normed = (x - mean) / np.sqrt(var + np.float32(float(attrs.epsilon)))
    return normed * gamma + beta


def _gelu(attrs, x):
    return (x * (np.float32(0.5) + erf(x * np.float32(1 / math.sqrt(2))).astype(np.float32) * np.float32(0.5)))


def _avg_pool2d(attrs, x):
    if str(attrs.layout) != "NCHW" or bool(attrs.ceil_mode):
        raise ReferenceError("the reference avg_pool2d supports NCHW without ceil_mode only")
    window = tuple(int(p) for p in attrs.pool_size)
    total = _windows(x.astype(np.float32), attrs, window, 0).sum(axis=(-2, -1), dtype=np.float32)
    if bool(attrs.count_include_pad) or not any(int(p) for p in attrs.padding):
        return total / np.float32(window[0] * window[1])
    ones = np.ones((1, 1) + x.shape[2:], np.float32)
    return total / _windows(ones, attrs, window, 0).sum(axis=(-2, -1), dtype=np.float32)


def _adaptive_avg_pool2d(attrs, x):
    size = [int(v) for v in attrs.output_size] if attrs.output_size is not None else [1, 1]
    if str(attrs.layout) != "NCHW" or size != [1, 1]:
        raise ReferenceError("the reference adaptive_avg_pool2d supports NCHW to 1x1 only")
    return x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)


def _sigmoid(attrs, x):
    x = x.astype(np.float32)
    return np.float32(1) / (np.float32(1) + np.exp(-x))


def _split(attrs, x):
    sections = attrs.indices_or_sections
    where = int(sections.value) if hasattr(sections, "value") else [int(i) for i in sections]
    return tuple(np.split(x, where, axis=int(attrs.axis)))


def _right_shift(attrs, a, b):
    return np.right_shift(a, b)


def _binary(fn: Callable) -> Callable:
    return lambda attrs, a, b: fn(np.asarray(a), np.asarray(b))


_RULES: dict[str, Callable[..., Any]] = {
    "relax.quantize": _quantize,
    "relax.dequantize": _dequantize,
    "relax.nn.conv2d": _conv2d,
    "relax.matmul": _matmul,
    "relax.nn.pad": _pad,
    "relax.nn.max_pool2d": _max_pool2d,
    "relax.astype": lambda attrs, x: x.astype(str(attrs.dtype)),
    "relax.add": _binary(np.add),
    "relax.subtract": _binary(np.subtract),
    "relax.multiply": _binary(np.multiply),
    "relax.divide": _binary(np.divide),
    "relax.floor_divide": _binary(np.floor_divide),
    "relax.maximum": _binary(np.maximum),
    "relax.minimum": _binary(np.minimum),
    "relax.right_shift": _right_shift,
    "relax.left_shift": _binary(np.left_shift),
    "relax.greater_equal": _binary(np.greater_equal),
    "relax.greater": _binary(np.greater),
    "relax.less": _binary(np.less),
    "relax.less_equal": _binary(np.less_equal),
    "relax.equal": _binary(np.equal),
    "relax.not_equal": _binary(np.not_equal),
    "relax.bitwise_and": _binary(np.bitwise_and),
    "relax.clip": lambda attrs, x, lo, hi: np.clip(x, lo, hi),
    "relax.nn.relu": lambda attrs, x: np.maximum(x, 0),
    "relax.reshape": lambda attrs, x, shape: x.reshape(shape),
    "relax.permute_dims": lambda attrs, x: np.transpose(x, None if attrs.axes is None else list(map(int, attrs.axes))),
    "relax.expand_dims": lambda attrs, x: np.expand_dims(x, tuple(int(a) for a in attrs.axis)),
    "relax.squeeze": lambda attrs, x: np.squeeze(x, _axes(attrs, x.ndim)),
    "relax.broadcast_to": lambda attrs, x, shape: np.broadcast_to(x, shape).copy(),
    "relax.sum": lambda attrs, x: x.sum(axis=_axes(attrs, x.ndim), keepdims=bool(attrs.keepdims), dtype=x.dtype),
    "relax.mean": lambda attrs, x: x.mean(axis=_axes(attrs, x.ndim), keepdims=bool(attrs.keepdims)),
    "relax.take": lambda attrs, x, indices: np.take(x, indices, axis=int(attrs.axis)),
    "relax.arange": lambda attrs, start, end, step: np.arange(start, end, step),
    "relax.where": lambda attrs, cond, a, b: np.where(cond, a, b),
    "relax.index_tensor": lambda attrs, x, indices: x[tuple(indices)],
    "relax.nn.softmax": _softmax,
    "relax.nn.layer_norm": _layer_norm,
    "relax.nn.gelu": _gelu,
    # float ops of the QDQ simulation (``compiler.quantization.oracle``), in float32 as TVM computes them
    "relax.nn.avg_pool2d": _avg_pool2d,
    "relax.nn.adaptive_avg_pool2d": _adaptive_avg_pool2d,
    "relax.sigmoid": _sigmoid,
    "relax.nn.silu": lambda attrs, x: x * _sigmoid(attrs, x),
    "relax.tanh": lambda attrs, x: np.tanh(x),
    "relax.exp": lambda attrs, x: np.exp(x),
    "relax.log": lambda attrs, x: np.log(x),
    "relax.sqrt": lambda attrs, x: np.sqrt(x),
    "relax.rsqrt": lambda attrs, x: np.float32(1) / np.sqrt(x),
    "relax.erf": lambda attrs, x: erf(x).astype(x.dtype),
    "relax.abs": lambda attrs, x: np.abs(x),
    "relax.floor": lambda attrs, x: np.floor(x),
    "relax.negative": lambda attrs, x: np.negative(x),
    "relax.power": _binary(np.power),
    "relax.max": lambda attrs, x: x.max(axis=_axes(attrs, x.ndim), keepdims=bool(attrs.keepdims)),
    "relax.min": lambda attrs, x: x.min(axis=_axes(attrs, x.ndim), keepdims=bool(attrs.keepdims)),
    "relax.concat": lambda attrs, xs: np.concatenate(xs, axis=0 if attrs.axis is None else int(attrs.axis)),
    "relax.split": _split,
    "relax.flatten": lambda attrs, x: x.reshape(x.shape[0], -1),
}


def exposing(mod: tvm.IRModule, names: list[str]) -> tvm.IRModule:
    """A copy of ``mod`` whose main also returns the variables ``names`` (after its own outputs), so the
    compiled executable can be compared with ``interpret`` variable by variable."""
    from passes.dataflow import also_returning, main_block

    wanted = set(names)
    exposed = [b.var for b in main_block(mod, "exposing").bindings if b.var.name in wanted]  # program order
    return also_returning(mod, exposed, "exposing")


@dataclass(frozen=True)
class Agreement:
    """How the compiled executable compares with ``interpret`` on one sample."""

    integer_tensors: int  # integer-typed variables compared
    differing: list[str]  # those not equal bit for bit
    outputs_equal: bool  # main's float outputs bit for bit (float islands may break this)
    synchronised: int = 0  # float island outputs the interpreter took from the compiled run


def compare_with_compiled(lowered: tvm.IRModule, samples, target: Any = None,
                          synchronise_islands: bool = True) -> list[Agreement]:
    """Compile ``lowered`` (after ``lower_integer``) with every integer variable exposed, run it and the
    interpreter on each sample ({input name: array}, in the model's input order), and compare every integer
    tensor bit for bit. With ``synchronise_islands`` the interpreter takes the compiled value of each float
    tensor that a float island hands to a quantize, so a last-bit float difference inside an island (exp,
    erf, rsqrt of two libraries) cannot flip a rounding and hide what the integer part does."""
    import backends

    from ..executable import CompiledModel, flatten_result
    from ..pipeline import Pipeline

    bindings = lowered["main"].body.blocks[0].bindings
    names = [b.var.name for b in bindings
             if isinstance(b.var.ty, relax.TensorType) and np.issubdtype(np.dtype(str(b.var.ty.dtype)), np.integer)]
    params = [p.name for p in lowered["main"].params]
    boundaries = [b.value.args[0].name for b in bindings
                  if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == "relax.quantize"
                  and isinstance(b.value.args[0], relax.Var) and b.value.args[0].name not in params]
    boundaries = boundaries if synchronise_islands else []
    mod, _ = Pipeline.default().run(exposing(lowered, names + boundaries))
    library, _ = backends.build(mod, backends.parse_target(target))
    exposed = [b.var.name for b in bindings if b.var.name in set(names + boundaries)]  # in program order
    compiled = CompiledModel(library, {"inputs": [], "outputs": []})
    results = []
    for sample in samples:
        values = [sample[n] for n in params] if all(n in sample for n in params) else list(sample.values())
        arrays = [np.asarray(v) for v in values]  # by parameter name, else in the model's input order
        leaves = [t.numpy() for t in flatten_result(compiled.call([tvm.runtime.tensor(a) for a in arrays]))]
        got = dict(zip(exposed, leaves[len(leaves) - len(exposed):]))
        trace = interpret(lowered, dict(zip(params, arrays)), {n: got[n] for n in boundaries})
        differing = [n for n in names if not np.array_equal(trace.values[n], got[n])]
        outputs_equal = all(np.array_equal(a, b) for a, b in zip(trace.outputs, leaves))
        results.append(Agreement(len(names), differing, outputs_equal, len(boundaries)))
    return results
