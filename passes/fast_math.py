"""fast_math: exp, erf, tanh, GELU and softmax on float32 through vectorizable polynomial approximations.

Requires: a Relax module before ``legalize_ops``.
Guarantees: every float32 ``exp``, ``erf``, ``tanh``, ``nn.gelu``, ``nn.gelu_tanh`` and ``nn.softmax`` becomes a
kernel of TVM's ``topi.fast_exp`` / ``fast_erf`` / ``fast_tanh`` (``fast_softmax``: ``fast_exp`` of the shifted
input) instead of one libm call per element (``expf``, ``erff``, ``tanhf``), which LLVM cannot vectorize; the
default CPU schedule then runs them in vector lanes. Other dtypes are left as they are.
Numerics: each approximated function is within ``MAX_RELATIVE_ERROR`` of the exact one (relative to its
result; measured against float64 on 2^22 points over erf [-6, 6], exp [-87, 88], tanh [-10, 10]: erf
3.74e-7, exp 3.08e-7, tanh 3.22e-7, ``benchmarks/fast_math.py``), against about 1 ulp (6e-8) for libm. GELU
carries the error of one erf, softmax that of its exps and one division. The differential oracle adds this
bound to the float islands it checks (``compiler.quantization.oracle``).
"""

from __future__ import annotations

import math

import tvm
from tvm import relax, tirx, topi
from tvm.relax.expr_functor import PyExprMutator, mutator

from .dataflow import op_name, rewrite_functions
from .registry import register_pass

MAX_RELATIVE_ERROR = 4e-7
"""The largest relative error of ``topi.fast_exp`` / ``fast_erf`` / ``fast_tanh`` in float32 (measured, see above)."""


def gelu(x):
    """TE: ``x * (0.5 + 0.5 * erf(x / sqrt(2)))`` (``relax.nn.gelu``'s own formula) with ``fast_erf``."""
    half = tirx.const(0.5, x.dtype)
    return x * (half + topi.fast_erf(x * tirx.const(0.5**0.5, x.dtype)) * half)


def gelu_tanh(x):
    """TE: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (``relax.nn.gelu_tanh``'s formula) with ``fast_tanh``."""
    const = lambda v: tirx.const(v, x.dtype)  # noqa: E731
    inner = const(math.sqrt(2.0 / math.pi)) * x * (const(1.0) + const(0.044715) * x * x)
    return const(0.5) * x * (const(1.0) + topi.fast_tanh(inner))


APPROXIMATIONS = {
    "relax.exp": (topi.fast_exp, "exp"),
    "relax.erf": (topi.fast_erf, "erf"),
    "relax.tanh": (topi.fast_tanh, "tanh"),
    "relax.nn.gelu": (gelu, "gelu"),
    "relax.nn.gelu_tanh": (gelu_tanh, "gelu_tanh"),
}


@mutator
class _FastMath(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802  (TVM's visitor naming)
        call = super().visit_call_(call)
        name = op_name(call)
        if not call.args or str(getattr(call.args[0].ty, "dtype", "")) != "float32":
            return call
        if name in APPROXIMATIONS:
            compute, hint = APPROXIMATIONS[name]
            return self.builder_.call_te(compute, call.args[0], primfunc_name_hint=f"fast_{hint}")
        if name == "relax.nn.softmax":
            return self.builder_.call_te(topi.nn.fast_softmax, call.args[0], int(call.attrs.axis),
                                         primfunc_name_hint="fast_softmax")
        return call


@register_pass("fast_math")
def fast_math(mod: tvm.IRModule) -> tvm.IRModule:
    """Relax -> Relax: float32 exp / erf / tanh / GELU / softmax through vectorizable approximations."""
    return rewrite_functions(mod, _FastMath(mod))
