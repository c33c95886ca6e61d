"""check_integer_only: prove that no float arithmetic runs between quantize and dequantize.

Requires: a Relax module before ``legalize_ops`` whose ``main`` is one dataflow block.
Guarantees: returns the module unchanged when every call that computes a float tensor either has no
``relax.quantize`` upstream (the float prologue) or no ``relax.quantize`` downstream (the float epilogue
after the output dequantize); otherwise raises ``IntegerOnlyError`` listing each offending call (op and
variable), except declared float islands: ops named in ``allowed`` (such as softmax) and the variables that
``lower_integer`` listed in main's ``qc.float_islands`` attribute, each with its reason in
``qc.float_island_reasons`` (the policy kept a layer in float, or the op has no integer form). With
``strict=True`` a declared island is an error too. A module without any quantize is refused: it has no
integer part to check.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import tvm
from tvm import relax

from .dataflow import main_block, op_name, var_args
from .registry import PassError, register_pass

ISLANDS_ATTRIBUTE = "qc.float_islands"  # written by lower_integer: the island variables' names
ISLAND_REASONS_ATTRIBUTE = "qc.float_island_reasons"  # written by lower_integer: {variable name: why float}
QUANTIZE = "relax.quantize"
DEQUANTIZE = "relax.dequantize"


class IntegerOnlyError(PassError):
    """Float arithmetic found inside the integer part of the graph."""

    def __init__(self, offenders: list[tuple[str, str]]):
        self.offenders = offenders
        listed = ", ".join(f"{op} ({var})" for op, var in offenders[:8])
        more = f" and {len(offenders) - 8} more" if len(offenders) > 8 else ""
        super().__init__(f"{len(offenders)} float operation(s) between quantize and dequantize: {listed}{more}")


def float_islands(mod: tvm.IRModule, allowed: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(op name, bound variable) of every float-producing call with a quantize both upstream and downstream,
    apart from the declared islands."""
    bindings = [(b.var, b.value) for b in main_block(mod, "check_integer_only").bindings]
    if not any(op_name(value) == QUANTIZE for _, value in bindings):
        raise PassError("check_integer_only: main has no quantize, so no integer part to check")
    region = _integer_vars(bindings)
    allowed = set(allowed)
    attrs = mod["main"].attrs
    declared = {str(v) for v in attrs[ISLANDS_ATTRIBUTE]} if attrs and ISLANDS_ATTRIBUTE in attrs else set()
    offenders = []
    for var, value in bindings:
        op = op_name(value)
        if op is None or op in (QUANTIZE, DEQUANTIZE) or op in allowed or var.name in declared:
            continue
        if var in region and _is_float(var):
            offenders.append((op, var.name))
    return offenders


def integer_region(mod: tvm.IRModule) -> set[str]:
    """Names of main's variables with a quantize both upstream and downstream (the float prologue and
    epilogue excluded): where a float op is an island."""
    return {var.name for var in _integer_vars([(b.var, b.value) for b in main_block(mod, "integer_region").bindings])}


def _integer_vars(bindings) -> set[relax.Var]:
    """The bound variables with a quantize both upstream and downstream."""
    after, before = _reach(bindings, forward=True), _reach(bindings, forward=False)
    return {var for var, _ in bindings if var in after and var in before}


def declared_islands(mod: tvm.IRModule) -> dict[str, int]:
    """How many calls of each op ``lower_integer`` declared as float islands in main."""
    attrs = mod["main"].attrs
    declared = {str(v) for v in attrs[ISLANDS_ATTRIBUTE]} if attrs and ISLANDS_ATTRIBUTE in attrs else set()
    counts: dict[str, int] = {}
    for var, value in ((b.var, b.value) for b in main_block(mod, "declared_islands").bindings):
        if var.name in declared and op_name(value):
            counts[op_name(value)] = counts.get(op_name(value), 0) + 1
    return counts


def island_reasons(mod: tvm.IRModule) -> dict[str, int]:
    """How many island ops each reason (``lower_integer``'s: policy, or no integer form for an op) accounts for."""
    attrs = mod["main"].attrs
    reasons = attrs[ISLAND_REASONS_ATTRIBUTE] if attrs and ISLAND_REASONS_ATTRIBUTE in attrs else {}
    counts: dict[str, int] = {}
    for reason in reasons.values():
        counts[str(reason)] = counts.get(str(reason), 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


class StrictIntegerError(IntegerOnlyError):
    """``strict`` mode: the lowering declared float islands, and none is allowed."""

    def __init__(self, reasons: dict[str, int]):
        self.offenders = []
        listed = "; ".join(f"{count} x {reason}" for reason, count in reasons.items())
        PassError.__init__(self, f"strict integer-only: {sum(reasons.values())} float island op(s): {listed}")


@register_pass("check_integer_only")
def check_integer_only(mod: tvm.IRModule, allowed: Sequence[str] = (), strict: bool = False) -> tvm.IRModule:
    """Relax -> same Relax, or IntegerOnlyError naming float ops between quantize and dequantize (with
    ``strict``, declared float islands are errors too)."""
    offenders = float_islands(mod, allowed)
    if offenders:
        raise IntegerOnlyError(offenders)
    if strict and island_reasons(mod):
        raise StrictIntegerError(island_reasons(mod))
    return mod


def _reach(bindings: list[tuple[relax.Var, relax.Expr]], forward: bool) -> set[relax.Var]:
    """Vars with a quantize upstream (forward) or downstream (backward), the quantize's own var included."""
    uses = {var: var_args(value) for var, value in bindings}
    marked: set[relax.Var] = set()
    if forward:
        for var, value in bindings:
            if op_name(value) == QUANTIZE or any(arg in marked for arg in uses[var]):
                marked.add(var)
        return marked
    for var, value in reversed(bindings):
        if op_name(value) == QUANTIZE:
            marked.update(uses[var])
        if var in marked:
            marked.update(uses[var])
    return marked


def _is_float(var: relax.Var) -> bool:
    ty = var.ty
    return isinstance(ty, relax.TensorType) and str(ty.dtype).startswith(("float", "bfloat"))
