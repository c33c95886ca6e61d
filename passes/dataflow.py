"""Helpers for passes that read or rebuild ``main`` as one dataflow block (not a pass).

The importers produce ``main`` as a single dataflow block; the quantization passes rely on that and share
the check, and the passes that rebuild ``main`` share how the new function replaces the old one.
"""

from __future__ import annotations

from typing import Any, Callable

import tvm
from tvm import relax

from .registry import PassError


def main_block(mod: tvm.IRModule, pass_name: str) -> relax.DataflowBlock:
    """The only dataflow block of ``mod["main"]``; anything else is refused, naming ``pass_name``."""
    blocks = mod["main"].body.blocks
    if len(blocks) != 1:
        raise PassError(f"{pass_name} expects main to be one dataflow block, found {len(blocks)}")
    return blocks[0]


def function_attrs(func: relax.Function) -> dict[str, Any] | None:
    """``func``'s attributes in the form ``BlockBuilder.function`` takes."""
    return dict(func.attrs.items()) if func.attrs else None


def op_name(value: relax.Expr) -> str | None:
    """The op name of a call to a Relax operator, else None."""
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        return value.op.name
    return None


def var_args(value: relax.Expr) -> list[relax.Var]:
    """The variables ``value`` reads (through call arguments, tuples and tuple items)."""
    if isinstance(value, relax.Call):
        return [v for arg in value.args for v in var_args(arg)]
    if isinstance(value, relax.Tuple):
        return [v for field in value.fields for v in var_args(field)]
    if isinstance(value, relax.TupleGetItem):
        return var_args(value.tuple_value)
    return [value] if isinstance(value, relax.Var) else []


def map_vars(value: relax.Expr, fn: Callable[[relax.Var], relax.Expr]) -> relax.Expr:
    """``value`` with every variable it reads replaced by ``fn(variable)``."""
    if isinstance(value, relax.Var):
        return fn(value)
    if isinstance(value, relax.Call):
        return relax.Call(value.op, [map_vars(a, fn) for a in value.args], value.attrs, value.ty_args)
    if isinstance(value, relax.Tuple):
        return relax.Tuple([map_vars(f, fn) for f in value.fields])
    if isinstance(value, relax.TupleGetItem):
        return relax.TupleGetItem(map_vars(value.tuple_value, fn), value.index)
    return value


def also_returning(mod: tvm.IRModule, extra: list[relax.Var], pass_name: str) -> tvm.IRModule:
    """A copy of ``mod`` whose main returns ``(its own outputs..., *extra)``; ``extra`` are vars of main."""
    func = mod["main"]
    block = main_block(mod, pass_name)
    original = func.body.body
    returned = list(original.fields) if isinstance(original, relax.Tuple) else [original]
    builder = relax.BlockBuilder()
    with builder.function("main", func.params, attrs=function_attrs(func)):
        with builder.dataflow():
            for binding in block.bindings:
                builder.emit_normalized(binding)
            result = builder.emit_output(relax.Tuple(returned + list(extra)))
        builder.emit_func_output(result)
    return with_main(mod, builder)


def with_main(mod: tvm.IRModule, builder: relax.BlockBuilder) -> tvm.IRModule:
    """A copy of ``mod`` whose ``main`` is the one ``builder`` just built, with any kernels the builder made
    (``emit_te``) added; the input is left unchanged."""
    functions = {gvar: func for gvar, func in mod.functions.items() if gvar.name_hint != "main"}
    taken = {gvar.name_hint for gvar in functions}
    for gvar, func in builder.get().functions.items():
        if gvar.name_hint not in taken:  # the new main and the builder's kernels, under their own GlobalVars
            functions[gvar] = func
    return tvm.IRModule(functions, attrs=mod.attrs)


def widened_int32(value: relax.Expr, lookup: Callable[[relax.Var], relax.Expr | None]) -> tuple[relax.Expr, int] | None:
    """(x, c) when ``value`` is bound to ``astype(x, "int32") - c`` with c a scalar integer constant, or to
    ``astype(x, "int32")`` (c = 0), as ``lower_integer`` widens an integer tensor (an activation matmul's
    centred operand, a table's index); else None. ``lookup`` finds a variable's bound value (a mutator's
    ``lookup_binding``)."""
    bound = lookup(value) if isinstance(value, relax.Var) else None
    offset = 0
    if bound is not None and op_name(bound) == "relax.subtract":
        constant = bound.args[1]
        if not isinstance(constant, tvm.ir.expr.GenericConst) or constant.value.numpy().size != 1:
            return None
        offset = int(constant.value.numpy().reshape(()))
        bound = lookup(bound.args[0]) if isinstance(bound.args[0], relax.Var) else None
    if bound is None or op_name(bound) != "relax.astype" or str(bound.attrs.dtype) != "int32":
        return None
    return bound.args[0], offset


def rewrite_functions(mod: tvm.IRModule, mutator) -> tvm.IRModule:
    """``mod`` with every Relax function visited by ``mutator`` (a ``PyExprMutator`` built on ``mod``)."""
    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return mutator.builder_.get()
