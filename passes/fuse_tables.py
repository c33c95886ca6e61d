"""fuse_tables: make each 8-bit lookup table of ``lower_integer`` an elementwise kernel that fusion puts in
its producer's epilogue.

Requires: the integer module of ``lower_integer`` (its tables: ``take(T, astype(x, int32) [- c], axis=0,
mode="clip")`` with T a constant of 256 entries and x a uint8 / int8 tensor, c = -128 for int8), before
``legalize_ops``.
Guarantees: each such lookup becomes one ``lookup`` kernel reading x itself (no int32 index tensor),
marked elementwise (``ELEMENTWISE_ATTRIBUTE``, made its fusion pattern by ``elementwise_patterns``), so
``fuse_ops`` appends it to the kernel that produces x (MiniLM's GELU to its first
FFN matmul's requantize). Where x is a reshape of y, the lookup reads y and its result is reshaped: the table
then follows the producer of y, and a reshape of that reshape reads the lookup directly (none where it
restores y's shape). Other ``take`` calls are left as they are.
Numerics: exact (the same entries at the same indices; every uint8 / int8 code has one).
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .dataflow import op_name, rewrite_functions, widened_int32
from .registry import register_pass

ELEMENTWISE_ATTRIBUTE = "qc.elementwise"
"""On a kernel that fusion may treat as elementwise although it gathers (``annotate_op_pattern`` reads a gather
as opaque): ``elementwise_patterns``, after it, sets such a kernel's pattern to kElemWise."""
LOOKUP_BLOCK = "qc_lookup"
_OFFSETS = {"uint8": 0, "int8": -128}  # the first code of each 8-bit type: astype(x) - offset indexes T


def lookup(data, table):
    """TE: ``table[data - first code]`` for every element of an 8-bit ``data`` (a 256-entry table)."""
    from tvm import te

    offset = _OFFSETS[str(data.dtype)]
    return te.compute(data.shape, lambda *i: table[data[i].astype("int32") - offset], name=LOOKUP_BLOCK)


@mutator
class _TableFuser(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.reshaped: set[relax.Var] = set()  # lookups whose result the graph reads through a reshape

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802  (TVM's visitor naming)
        call = super().visit_call_(call)
        inner = self._bound(call.args[0], "relax.reshape") if op_name(call) == "relax.reshape" else None
        if inner is not None and inner.args[0] in self.reshaped:  # reshape(reshape(lookup(y))): one or none
            data = inner.args[0]
            same = [int(d) for d in data.ty.shape] == [int(d) for d in call.ty.shape]
            return data if same else relax.op.reshape(data, call.ty.shape)
        source = self._table_source(call)
        if source is None:
            return call
        table = call.args[0]
        reshaped = self._bound(source, "relax.reshape")
        data = reshaped.args[0] if reshaped is not None else source
        looked_up = self.builder_.call_te(lookup, data, table, primfunc_name_hint="lookup",
                                          primfunc_attrs={ELEMENTWISE_ATTRIBUTE: 1})
        if reshaped is None:
            return looked_up
        data = self.builder_.emit(looked_up)
        self.reshaped.add(data)
        return relax.op.reshape(data, call.ty.shape)

    def _table_source(self, call: relax.Call) -> relax.Expr | None:
        """x of ``take(T, astype(x, int32) [- c], axis=0, mode="clip")`` with T a 256-entry constant and x
        8-bit (c its type's first code), else None."""
        if op_name(call) != "relax.take" or not isinstance(call.args[0], tvm.ir.expr.GenericConst):
            return None
        table = call.args[0].value
        if (len(table.shape) != 1 or int(table.shape[0]) != 256 or int(call.attrs.axis) != 0
                or str(call.attrs.mode) != "clip"):
            return None
        found = widened_int32(call.args[1], self.lookup_binding)
        if found is None:
            return None
        source, offset = found
        dtype = str(source.ty.dtype) if isinstance(source.ty, relax.TensorType) else ""
        return source if _OFFSETS.get(dtype, 1) == offset else None

    def _bound(self, value: relax.Expr, op: str) -> relax.Call | None:
        bound = self.lookup_binding(value) if isinstance(value, relax.Var) else None
        return bound if bound is not None and op_name(bound) == op else None


@register_pass("fuse_tables")
def fuse_tables(mod: tvm.IRModule) -> tvm.IRModule:
    """Relax -> Relax: each 8-bit table lookup an elementwise ``lookup`` kernel on the 8-bit tensor itself."""
    return rewrite_functions(mod, _TableFuser(mod))
