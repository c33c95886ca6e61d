"""Which tensors of a float model carry a quantization scale (not a pass: the analysis the passes share).

An integer-only graph needs a (scale, zero point) for every tensor it keeps in integers. Calibration observes
exactly those tensors, ``insert_qdq`` puts a quantize/dequantize pair on each of them and ``lower_integer``
turns the ops between the pairs into integer ops. The plan names them (anchors):

- the output of each *group*: a quantized layer (conv2d / matmul with a constant weight) with its bias add
  and ReLU / clip, an activation matmul (``bmm_i``: a matmul of two variables, attention's Q x K^T and
  probabilities x V) with its ReLU / clip, a residual add (two non-constant operands of one shape) with its
  ReLU / clip, a mean (global average pooling), an average pooling with one divisor, an elementwise product
  of two tensors (squeeze-excite gating), a concat, or a *table*: each result of a chain of elementwise ops
  of one tensor (``passes.elementwise``: hardswish, sigmoid, SiLU, GELU, tanh, constant add / multiply ...)
  that is read outside the chain, when some consumer wants it in integers;
- an *entry*: a float tensor (a model input, the result of a float op) that a quantized layer or an integer
  group reads.

A consumer wants a tensor in integers when it is a quantized layer reading it as data, an activation matmul
reading it as either operand, a group that is itself integer (its output is wanted in integers: it wants its
operands, a table its source), or a pass-through op (max pooling, reshape, transpose, zero padding,
broadcast) whose output is wanted in integers; pass-through outputs share their input's scale. A layer or
activation-matmul group nobody wants in integers (the logits, a projection feeding layernorm, attention
scores feeding softmax) is dequantized straight from its int32 accumulator. Anchors get the activation spec
of the (most precise) layer that reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import tvm
from tvm import relax

from .dataflow import op_name, var_args
from .elementwise import elementwise_sources
from .quant_policy import LayerSpec

PASS_THROUGH = {"relax.nn.max_pool2d", "relax.reshape", "relax.permute_dims", "relax.nn.pad",
                "relax.squeeze", "relax.expand_dims", "relax.flatten", "relax.broadcast_to"}
ACTIVATIONS = {"relax.nn.relu", "relax.clip"}
QUANTIZABLE_OPS = {"relax.nn.conv2d": "conv2d", "relax.matmul": "matmul"}


@dataclass
class Anchor:
    """A tensor that gets its own scale: its variable, its producer kind and the activation spec."""

    name: str
    var: relax.Var
    kind: str  # "group" (layer / add / mean output) or "entry" (float tensor entering the integer part)
    spec: LayerSpec


@dataclass
class Plan:
    """The anchors in program order, and for each quantized layer the anchor its data input comes from."""

    anchors: dict[str, Anchor] = field(default_factory=dict)
    layer_inputs: dict[str, str] = field(default_factory=dict)
    integer_readers: set = field(default_factory=set)  # vars bound by ops that read their inputs as integers

    def anchor_of(self, var: relax.Var) -> Anchor | None:
        return next((a for a in self.anchors.values() if a.var.same_as(var)), None)


def quantizable_layers(func: relax.Function) -> list[tuple[str, relax.Call]]:
    """``(layer name, call)`` for every conv2d / matmul with a constant weight, in program order."""
    return [(name, binding.value) for name, binding in quantizable_bindings(func)]


def quantizable_bindings(func: relax.Function) -> list[tuple[str, relax.VarBinding]]:
    """``(layer name, binding)`` of every conv2d / matmul with a constant weight, in program order: the
    plan's names (``conv2d_0``, ``conv2d_1``, ..., ``matmul_0``, ...)."""
    layers: list[tuple[str, relax.VarBinding]] = []
    seen: dict[str, int] = {}
    for binding in func.body.blocks[0].bindings:
        kind = QUANTIZABLE_OPS.get(op_name(binding.value))
        if kind and isinstance(binding.value.args[1], tvm.ir.expr.GenericConst):
            layers.append((f"{kind}_{seen.get(kind, 0)}", binding))
            seen[kind] = seen.get(kind, 0) + 1
    return layers


def activation_matmuls(func: relax.Function) -> list[tuple[str, relax.Call]]:
    """``(name, call)`` for every matmul of two variables (attention's Q x K^T and probabilities x V), in
    program order: ``bmm_0``, ``bmm_1``, ... A policy names them as it names layers (``bmm_*``); one kept
    in float (``quantize=False``) stays a float island."""
    calls = [b.value for b in func.body.blocks[0].bindings
             if op_name(b.value) == "relax.matmul" and all(isinstance(a, relax.Var) for a in b.value.args)]
    return [(f"bmm_{i}", call) for i, call in enumerate(calls)]


def policy_names(func: relax.Function) -> list[str]:
    """Every name a policy may address in ``func``: its quantizable layers, then its activation matmuls."""
    return [name for name, _ in quantizable_layers(func) + activation_matmuls(func)]


def is_pass_through(call: relax.Expr) -> bool:
    """Ops that move integers without changing their scale (zero padding only)."""
    name = op_name(call)
    if name not in PASS_THROUGH:
        return False
    if name == "relax.nn.pad":
        return str(call.attrs.pad_mode) == "constant" and float(call.attrs.pad_value) == 0.0
    return True


def plan_quantization(func: relax.Function, specs: Mapping[str, LayerSpec]) -> Plan:
    """The anchors of ``func`` (one dataflow block, weights constant) under per-layer ``specs``."""
    bindings = [(b.var, b.value) for b in func.body.blocks[0].bindings]
    consumers: dict[relax.Var, list[tuple[relax.Var, relax.Expr]]] = {}
    for var, value in bindings:
        for arg in var_args(value):
            consumers.setdefault(arg, []).append((var, value))
    layer_names = {call: name for name, call in quantizable_layers(func)}
    quantized = {call: name for call, name in layer_names.items() if specs.get(name, LayerSpec()).quantize}
    products = {call: name for name, call in activation_matmuls(func) if specs.get(name, LayerSpec()).quantize}

    group_of: dict[relax.Var, tuple[str, relax.Var]] = {}  # group output var -> (group name, head var)
    member: set[relax.Var] = set()  # vars inside a group (not its output)
    counters: dict[str, int] = {}
    chains = elementwise_sources(bindings)  # every elementwise op -> the one tensor it is a function of
    for var, value in bindings:
        name = op_name(value)
        if var in member:
            continue
        if value in quantized:
            head_name = quantized[value]
        elif value in products:
            head_name = products[value]
        elif name == "relax.add" and is_residual_add(value) and var not in chains:
            head_name = _count(counters, "add")
        elif name == "relax.mean":
            head_name = _count(counters, "mean")
        elif name == "relax.nn.avg_pool2d" and integer_avg_pool(value):
            head_name = _count(counters, "pool")
        else:
            continue
        chain = [var]
        if value in quantized:
            _follow(chain, consumers, lambda c: op_name(c) == "relax.add" and _is_bias(c))
        _follow(chain, consumers, lambda c: op_name(c) in ACTIVATIONS)
        member.update(chain[:-1])
        group_of[chain[-1]] = (head_name, var)

    claimed = member | set(group_of) | {head for _, head in group_of.values()}
    tables = _tables(bindings, consumers, claimed, func)  # sink -> (source, region vars)
    for sink, (source, region) in tables.items():
        member.update(v for v in region if v not in tables)
        group_of[sink] = (_count(counters, "table"), sink)
    claimed |= set(tables) | member
    for var, value in bindings:
        if var in claimed:
            continue
        if op_name(value) == "relax.multiply" and _is_product(value):
            group_of[var] = (_count(counters, "mul"), var)
        elif op_name(value) == "relax.concat" and isinstance(value.args[0], relax.Tuple):
            group_of[var] = (_count(counters, "concat"), var)

    heads = {head: (name, out) for out, (name, head) in group_of.items()}
    head_values = dict(bindings)
    wants: dict[relax.Var, LayerSpec] = {}  # var -> spec of the most precise integer consumer

    readers: set[relax.Var] = set()

    def want(var: relax.Expr, spec: LayerSpec, reader: relax.Var) -> None:
        readers.add(reader)
        if isinstance(var, relax.Var):
            old = wants.get(var)
            if old is None or spec.activation_bits > old.activation_bits:
                wants[var] = spec

    for var, value in reversed(bindings):
        if var in heads:
            name, out = heads[var]
            if value in quantized:
                want(value.args[0], specs.get(name, LayerSpec()), var)
            elif value in products:  # both operands, whether or not its output is wanted in integers
                for arg in value.args:
                    want(arg, specs.get(name, LayerSpec()), var)
            elif var in tables and out in wants:  # a table reads its source in integers, in every op
                source, region = tables[var]
                for member_var in region:
                    want(source, wants[out], member_var)
            elif out in wants:  # an integer add / mean / product / concat: its operands are integers too
                for arg in var_args(value):
                    want(arg, wants[out], var)
        elif is_pass_through(value) and var in wants:
            want(value.args[0], wants[var], var)

    plan = Plan(integer_readers=readers)
    produced_by_pass = {var for var, value in bindings if is_pass_through(value) and var in wants}
    for param in func.params:
        if param in wants:
            plan.anchors[f"in:{param.name}"] = Anchor(f"in:{param.name}", param, "entry", wants[param])
    for var, value in bindings:
        if var not in wants or var in member or var in produced_by_pass:
            continue
        if var in group_of:
            name = group_of[var][0]
            plan.anchors[name] = Anchor(name, var, "group", wants[var])
        else:
            name = _count(counters, f"in:{(op_name(value) or 'value').split('.')[-1]}")
            plan.anchors[name] = Anchor(name, var, "entry", wants[var])
    for call, name in quantized.items():
        source = call.args[0]
        while isinstance(source, relax.Var) and source in produced_by_pass:
            source = head_values[source].args[0]
        anchor = plan.anchor_of(source)
        if anchor is not None:
            plan.layer_inputs[name] = anchor.name
    return plan


def integer_avg_pool(call: relax.Call) -> bool:
    """An average pooling with one divisor everywhere: no padding, or padding counted (NCHW, no ceil mode)."""
    attrs = call.attrs
    padded = any(int(p) for p in attrs.padding)
    return (str(attrs.layout) == "NCHW" and not bool(attrs.ceil_mode)
            and all(int(d) == 1 for d in attrs.dilation) and (not padded or bool(attrs.count_include_pad)))


def _is_product(call: relax.Call) -> bool:
    """multiply of two variables (a gate: x * sigmoid(s) in squeeze-excite), not of a variable by a constant."""
    return all(isinstance(a, relax.Var) for a in call.args)


def _tables(bindings, consumers, claimed: set, func: relax.Function) -> dict:
    """Chains of elementwise ops of one tensor: {each result read outside the chain: (source, chain vars in
    program order)}. Ops already in a layer / add / mean group are not part of any chain."""
    sources = elementwise_sources(bindings, opaque=claimed)
    regions: dict[relax.Var, list[relax.Var]] = {}
    for var, _ in bindings:
        if var in sources:
            regions.setdefault(sources[var], []).append(var)
    outputs = set(var_args(func.body.body))
    tables = {}
    for source, region in regions.items():
        inside = set(region)
        for sink in region:  # each result read outside the chain is a table of its own
            if sink in outputs or any(user not in inside for user, _ in consumers.get(sink, [])):
                tables[sink] = (source, region)
    return tables


def _follow(chain: list[relax.Var], consumers, accept) -> None:
    """Extend ``chain`` by its last var's only consumer when that consumer satisfies ``accept``."""
    users = consumers.get(chain[-1], [])
    if len(users) == 1 and accept(users[0][1]):
        chain.append(users[0][0])


def _is_bias(call: relax.Call) -> bool:
    """add(x, constant) or add(constant, x)."""
    return sum(isinstance(a, tvm.ir.expr.GenericConst) for a in call.args) == 1


def is_residual_add(call: relax.Call) -> bool:
    """An add of two variables of one shape (a residual connection), as opposed to a bias add."""
    a, b = call.args
    return (isinstance(a, relax.Var) and isinstance(b, relax.Var)
            and [int(d) for d in a.ty.shape] == [int(d) for d in b.ty.shape])


def _count(counters: dict[str, int], kind: str) -> str:
    index = counters.get(kind, 0)
    counters[kind] = index + 1
    return f"{kind}_{index}"
