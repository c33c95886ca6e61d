"""narrow_constants: store an int64 constant whose values fit int32 as int32, widened where it is read.

Requires: a legalized module (every op a ``call_tir``) after the last ``fold_constant``, before ``fuse_ops``.
Guarantees: every int64 ``relax.Constant`` argument of a ``call_tir`` whose values all lie in int32 is replaced
by an elementwise cast (a ``call_tir`` of ``topi.cast``, its fusion pattern annotated) of the same values stored
as int32; ``fuse_ops`` then fuses the cast into its reader, so the kernel loads 32 bits and sign-extends them.
The requantize of ``lower_integer`` multiplies an int32 accumulator, sign-extended, by such a constant (the
dyadic multiplier b < 2^31): with both factors visibly sign-extended, LLVM multiplies them with one
``vpmuldq`` (32 x 32 -> 64 bits) instead of ``vpmullq`` (64 x 64, three micro-ops on the Xeons here);
``benchmarks/epilogue.py`` counts the instructions. Constants that do not fit, and every other dtype, are
left as they are.
Numerics: exact (a sign extension restores each value).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, topi

from .registry import register_pass

@relax.expr_functor.mutator
class _Narrower(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.narrowed = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op != tvm.ir.Op.get("relax.call_tir"):
            return call
        args = [self._narrow(arg) for arg in call.args[1].fields]
        if all(new.same_as(old) for new, old in zip(args, call.args[1].fields)):
            return call
        return relax.Call(call.op, [call.args[0], relax.Tuple(args), *call.args[2:]], call.attrs, call.ty_args)

    def _narrow(self, arg: relax.Expr) -> relax.Expr:
        if not isinstance(arg, tvm.ir.expr.GenericConst) or str(arg.value.dtype) != "int64":
            return arg
        values = arg.value.numpy()
        info = np.iinfo(np.int32)
        if values.size and (values.min() < info.min or values.max() > info.max):
            return arg
        self.narrowed += 1
        narrow = relax.const(values.astype(np.int32), "int32")
        return self.builder_.emit(self.builder_.call_te(topi.cast, narrow, "int64", primfunc_name_hint="widen_int32"))


@register_pass("narrow_constants")
def narrow_constants(mod: tvm.IRModule) -> tvm.IRModule:
    """Relax -> Relax: int64 constants that fit int32 are stored as int32 and sign-extended in the kernel."""
    narrower = _Narrower(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            narrower.builder_.update_func(gvar, narrower.visit_expr(func))
    return relax.transform.AnnotateTIROpPattern()(narrower.builder_.finalize())  # the casts: elementwise
