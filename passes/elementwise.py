"""Elementwise functions of one tensor (not a pass: the analysis and evaluator the passes share).

A chain of elementwise ops whose only non-constant input is one tensor ``x`` computes ``f(x)`` element by
element: hardswish as the frontends spell it (``x * clip(x + 3, 0, 6) / 6``), SiLU (``x * sigmoid(x)``),
GELU, tanh, a constant add / multiply / subtract. When ``x`` is an 8-bit (or 4-bit) integer tensor, ``f`` has
at most 256 distinct inputs, so the whole chain is exact as a table computed at compile time
(``passes.lower_integer``): q_out[i] = clamp(round(f(s_x (i - z_x)) / s_out) + z_out).

``elementwise_sources`` finds, for every such op, the tensor it is a function of; ``evaluate`` runs the chain
in float64 numpy on the table's inputs.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import numpy as np
import tvm
from scipy.special import erf
from tvm import relax

from .dataflow import op_name


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(attrs, x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _gelu_tanh(attrs, x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _clip(attrs, x, lo, hi):
    return np.clip(x, lo, hi)


UNARY: dict[str, Callable] = {
    "relax.sigmoid": lambda attrs, x: _sigmoid(x),
    "relax.tanh": lambda attrs, x: np.tanh(x),
    "relax.exp": lambda attrs, x: np.exp(x),
    "relax.erf": lambda attrs, x: erf(x),
    "relax.negative": lambda attrs, x: -x,
    "relax.abs": lambda attrs, x: np.abs(x),
    "relax.square": lambda attrs, x: x * x,
    "relax.nn.relu": lambda attrs, x: np.maximum(x, 0.0),
    "relax.nn.silu": lambda attrs, x: x * _sigmoid(x),
    "relax.nn.gelu": _gelu,
    "relax.nn.gelu_tanh": _gelu_tanh,
    "relax.nn.leakyrelu": lambda attrs, x: np.where(x >= 0, x, x * float(attrs.alpha)),
    "relax.clip": _clip,
}
"""Ops of one tensor (clip's bounds are attributes-like arguments), in float64 numpy."""

BINARY: dict[str, Callable] = {
    "relax.add": lambda attrs, a, b: a + b,
    "relax.subtract": lambda attrs, a, b: a - b,
    "relax.multiply": lambda attrs, a, b: a * b,
    "relax.divide": lambda attrs, a, b: a / b,
    "relax.maximum": lambda attrs, a, b: np.maximum(a, b),
    "relax.minimum": lambda attrs, a, b: np.minimum(a, b),
    "relax.power": lambda attrs, a, b: np.power(a, b),
}
"""Ops of two tensors: elementwise of one source when both operands are (functions of) it or a scalar."""


def is_scalar_constant(expr: relax.Expr) -> bool:
    return isinstance(expr, tvm.ir.expr.GenericConst) and int(np.prod(expr.value.shape)) == 1


def source_of_call(value: relax.Expr, sources: Mapping[relax.Var, relax.Var]) -> relax.Var | None:
    """The one tensor an elementwise ``value`` is a function of (given the sources of its inputs), else None."""
    name = op_name(value)
    if name not in UNARY and name not in BINARY:
        return None
    found: set[relax.Var] = set()
    for arg in value.args:
        if isinstance(arg, relax.Var):
            found.add(sources.get(arg, arg))
        elif isinstance(arg, tvm.ir.expr.GenericConst):
            if not is_scalar_constant(arg):
                return None  # a per-channel constant: not one function for every element
        elif not isinstance(arg, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):
            return None
    if len(found) != 1:
        return None
    (source,) = found
    shape = getattr(source.ty, "shape", None)
    if shape is None or [int(d) for d in value.ty.shape] != [int(d) for d in shape]:
        return None  # broadcasting against a constant changed the shape
    return source


def elementwise_sources(bindings: Iterable[tuple[relax.Var, relax.Expr]],
                        opaque: set[relax.Var] = frozenset()) -> dict[relax.Var, relax.Var]:
    """{var: the tensor it is an elementwise function of} for every elementwise binding; a var in ``opaque``
    is never part of a chain (it stays a source)."""
    sources: dict[relax.Var, relax.Var] = {}
    for var, value in bindings:
        if var in opaque:
            continue
        source = source_of_call(value, sources)
        if source is not None:
            sources[var] = source
    return sources


def evaluate(chain: Iterable[tuple[relax.Var, relax.Expr]], source: relax.Var, x: np.ndarray,
             output: relax.Var) -> np.ndarray:
    """``output`` of the elementwise ``chain`` (bindings in program order) with ``source`` = ``x``, float64."""
    env: dict[relax.Var, np.ndarray] = {source: np.asarray(x, np.float64)}

    def read(arg):
        if isinstance(arg, relax.Var):
            return env[arg]
        if isinstance(arg, tvm.ir.expr.GenericConst):
            return np.float64(arg.value.numpy().reshape(()))
        return float(arg.value)

    for var, value in chain:
        rule = UNARY.get(op_name(value)) or BINARY[op_name(value)]
        env[var] = np.broadcast_to(rule(value.attrs, *[read(a) for a in value.args]), env[source].shape)
    return env[output]
