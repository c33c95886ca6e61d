"""Mixed-precision bit allocation (HAWQ-V3): choose 4 or 8 weight bits per layer by integer linear programming.

    costs = layer_costs(imported)                              # parameters and MACs per quantized layer
    sensitivity = measured_sensitivity(imported, samples)      # output change when only that layer is rounded
    latency = measure_layer_latency(imported, samples)         # compiled kernels per layer and width (cached)
    choice = allocate(sensitivity, costs, max_size_bytes=..., max_latency_ms=..., latency=latency)  # HiGHS
    policy = choice.policy()                                   # a QuantPolicy with one override per layer

The ILP has one binary x[l, b] per layer l and width b, exactly one width per layer, optional ties (layers
that must share a width) and pins (layer -> width), and constraints on model size (weight bytes), BOPs
(MACs x weight bits x activation bits) and latency (the measured overhead plus each layer's measured kernel
at its width, ``compiler.quantization.layer_latency``); it minimises the summed sensitivity. An infeasible budget is
reported with the smallest feasible value.

Sensitivity comes two ways. ``measured_sensitivity`` works for any model: the mean squared change of the
model's outputs on calibration samples when only that layer's weights are rounded to that width (per-channel,
symmetric), computed by the numpy reference interpreter on the float graph (no compile per configuration).
``hessian_sensitivity`` is HAWQ's for PyTorch classifiers: the average Hessian trace of each layer's weights
after BatchNorm folding, the weights the compiler quantizes (Hutchinson, a fixed number of Rademacher
probes), times ||Q(W) - W||^2 of those weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from frontends import ImportedModel
from passes.insert_qdq import rounded_weight, weight_axis
from passes.quant_plan import quantizable_layers
from passes.quant_policy import LayerSpec, QuantPolicy

from .calibration import prepare
from ..errors import CompilerError
from .layer_latency import LatencyTable
from .reference import interpret

WIDTHS = (4, 8)


class AllocationError(CompilerError):
    """The budget cannot be met, or the inputs of the allocation disagree."""


@dataclass(frozen=True)
class LayerCost:
    """A quantized layer's parameter count and multiply-accumulates per inference."""

    name: str
    params: int
    macs: int

    def size_bytes(self, bits: int) -> float:
        return self.params * bits / 8

    def bops(self, weight_bits: int, activation_bits: int) -> float:
        return self.macs * weight_bits * activation_bits


@dataclass
class Allocation:
    """The chosen weight width per layer, what it costs and how long the solver took."""

    bits: dict[str, int]
    size_bytes: float
    bops: float
    objective: float
    solve_seconds: float
    activation_bits: int = 8
    latency_ms: float | None = None  # predicted from the measured kernels, when a latency table was given
    notes: list[str] = field(default_factory=list)

    def policy(self, observer: str = "minmax") -> QuantPolicy:
        """A policy quantizing every layer at its chosen weight width."""
        return policy_for(self.bits, observer, self.activation_bits)


def policy_for(bits: Mapping[str, int], observer: str = "minmax", activation_bits: int = 8) -> QuantPolicy:
    """A policy with one override per layer at its weight width."""
    overrides = {name: LayerSpec(b, activation_bits, observer) for name, b in bits.items()}
    return QuantPolicy(LayerSpec(8, activation_bits, observer), overrides)


def layer_costs(imported: ImportedModel) -> list[LayerCost]:
    """Parameters and MACs of every quantizable layer (conv2d / matmul with a constant weight)."""
    costs = []
    for name, call in quantizable_layers(prepare(imported)["main"]):
        weight = [int(d) for d in call.args[1].ty.shape]
        out = [int(d) for d in call.ty.shape]
        per_output = int(np.prod(weight[1:])) if call.op.name == "relax.nn.conv2d" else weight[0]
        costs.append(LayerCost(name, int(np.prod(weight)), int(np.prod(out)) * per_output))
    return costs


def measured_sensitivity(imported: ImportedModel, samples: Iterable[Mapping[str, np.ndarray]],
                         widths: Sequence[int] = WIDTHS) -> dict[tuple[str, int], float]:
    """Mean squared output change per (layer, width) when only that layer's weights are rounded."""
    mod = prepare(imported)
    layers = quantizable_layers(mod["main"])
    params = [p.name for p in mod["main"].params]
    feeds = [dict(zip(params, (np.asarray(v) for v in sample.values()))) for sample in samples]
    if not feeds:
        raise AllocationError("sensitivity needs at least one calibration sample")
    reference = [interpret(mod, feed).outputs for feed in feeds]
    result: dict[tuple[str, int], float] = {}
    for name, call in layers:
        weight = call.args[1].value.numpy()
        axis = weight_axis(call)
        for bits in widths:
            perturbed = _with_weight(mod, call, rounded_weight(weight, bits, axis))
            error = [np.mean((np.asarray(a, np.float64) - b) ** 2)
                     for feed, ref in zip(feeds, reference)
                     for a, b in zip(interpret(perturbed, feed).outputs, ref)]
            result[(name, bits)] = float(np.mean(error))
    return result


def allocate(sensitivity: Mapping[tuple[str, int], float], costs: Sequence[LayerCost], *,
             max_size_bytes: float | None = None, max_bops: float | None = None,
             max_latency_ms: float | None = None, latency: LatencyTable | None = None, activation_bits: int = 8,
             ties: Iterable[Sequence[str]] = (), pinned: Mapping[str, int] | None = None,
             widths: Sequence[int] = WIDTHS) -> Allocation:
    """Minimise summed sensitivity under the budgets; raises ``AllocationError`` naming the smallest
    feasible budget when none is met. A latency budget needs ``latency`` (measured per layer and width)."""
    names = [c.name for c in costs]
    if max_latency_ms is not None and latency is None:
        raise AllocationError("a latency budget needs measured layer latencies (latency=measure_layer_latency(...))")
    pinned = dict(pinned or {})
    unknown = [n for n in list(pinned) + [n for group in ties for n in group] if n not in names]
    if unknown:
        raise AllocationError(f"unknown layer(s) {sorted(set(unknown))}; layers are: {', '.join(names)}")
    missing = [(n, b) for n in names for b in widths if (n, b) not in sensitivity]
    if missing:
        raise AllocationError(f"no sensitivity for {missing[:4]}")
    index = {(c.name, b): i for i, (c, b) in enumerate((c, b) for c in costs for b in widths)}
    count = len(index)
    objective = np.array([sensitivity[key] for key in index])
    rows, lower, upper = [], [], []

    def add(row: np.ndarray, lo: float, hi: float) -> None:
        rows.append(row)
        lower.append(lo)
        upper.append(hi)

    for c in costs:  # exactly one width per layer
        add(_row(count, {index[(c.name, b)]: 1 for b in widths}), 1, 1)
    for name, bits in pinned.items():
        add(_row(count, {index[(name, bits)]: 1}), 1, 1)
    for group in ties:
        for other in list(group)[1:]:
            for b in widths:
                add(_row(count, {index[(group[0], b)]: 1, index[(other, b)]: -1}), 0, 0)
    size = np.array([c.size_bytes(b) for c in costs for b in widths])
    bops = np.array([c.bops(b, activation_bits) for c in costs for b in widths])
    overhead = latency.overhead_ms if latency is not None else 0.0
    millis = (np.array([latency.layer_ms[(c.name, b)] for c in costs for b in widths]) if latency is not None
              else np.zeros(count))
    for values, budget, fixed in ((size, max_size_bytes, 0.0), (bops, max_bops, 0.0),
                                  (millis, max_latency_ms, overhead)):  # fixed: what no layer choice changes
        if budget is not None:
            add(values, -np.inf, budget - fixed)
    started = time.perf_counter()
    solution = milp(objective, constraints=LinearConstraint(np.array(rows), lower, upper),
                    integrality=np.ones(count), bounds=Bounds(0, 1))
    seconds = time.perf_counter() - started
    if not solution.success:
        smallest = _smallest(costs, widths, pinned, ties, size, index)
        smallest_bops = _smallest(costs, widths, pinned, ties, bops, index)
        asked = ", ".join(f"{label} <= {budget:.6g}" for label, budget in
                          (("size", max_size_bytes), ("BOPs", max_bops), ("latency ms", max_latency_ms))
                          if budget is not None)
        fastest = ""
        if latency is not None:
            least = overhead + _smallest(costs, widths, pinned, ties, millis, index)
            fastest = f" and the smallest feasible latency {least:.4g} ms"
        raise AllocationError(f"no allocation meets {asked} together; on its own, the smallest feasible size is "
                              f"{smallest:.0f} bytes, the smallest feasible BOPs {smallest_bops:.6g}{fastest}")
    x = np.round(solution.x).astype(int)
    bits = {name: b for (name, b), i in index.items() if x[i]}
    return Allocation(bits, float(size @ x), float(bops @ x), float(objective @ x), seconds, activation_bits,
                      None if latency is None else overhead + float(millis @ x))


def random_allocations(costs: Sequence[LayerCost], around: float, *, tolerance: float = 0.01, count: int = 20,
                       seed: int = 0, widths: tuple[int, int] = (4, 8)) -> list[dict[str, int]]:
    """Baselines for an allocation of weight size ``around`` bytes: ``count`` distinct allocations drawn
    uniformly among all those whose size is within ``tolerance`` (relative) of it, or all of them, smallest
    first, where fewer exist.

    Up to ``ENUMERATED_LAYERS`` layers every allocation is listed. Beyond, the count of allocations per size
    (in 1/4096 of the model's narrow-to-wide span, a dynamic programme over the layers) makes each draw
    uniform: a size is drawn in proportion to its count, then each layer's width backwards from it; a draw
    whose exact size falls outside the window after the rounding to units is drawn again."""
    low, high = around * (1 - tolerance), around * (1 + tolerance)
    narrow, wide = widths
    base = sum(c.size_bytes(narrow) for c in costs)
    delta = np.array([c.size_bytes(wide) - c.size_bytes(narrow) for c in costs])
    names = [c.name for c in costs]

    def allocation(chosen) -> dict[str, int]:
        return {name: wide if pick else narrow for name, pick in zip(names, chosen)}

    if len(costs) <= ENUMERATED_LAYERS:
        picks = (np.arange(2 ** len(costs))[:, None] >> np.arange(len(costs))) & 1
        sizes = base + picks @ delta
        inside = np.flatnonzero((sizes >= low) & (sizes <= high))
        if inside.size > count:
            inside = np.random.default_rng(seed).choice(inside, count, replace=False)
        return [allocation(picks[i]) for i in sorted(inside, key=lambda i: sizes[i])]
    unit = delta.sum() / 4096
    steps = np.rint(delta / unit).astype(np.int64)
    ways = [np.zeros(steps.sum() + 1)]  # ways[l][s]: allocations of the first l layers with s units
    ways[0][0] = 1.0
    for step in steps:
        ways.append(ways[-1].copy())
        ways[-1][step:] += ways[-2][: ways[-2].size - step]
    slack = len(costs) / 2 + 1  # the rounding moves a size by at most half a unit per layer
    first = max(0, int(np.floor((low - base) / unit - slack)))
    last = min(steps.sum(), int(np.ceil((high - base) / unit + slack)))
    if first > last or not ways[-1][first:last + 1].any():
        return []
    rng = np.random.default_rng(seed)
    found: dict[tuple, dict[str, int]] = {}
    window = ways[-1][first:last + 1] / ways[-1][first:last + 1].sum()  # P(size) over the widened window
    for _ in range(50 * count):
        units = first + int(rng.choice(window.size, p=window))
        chosen = []
        for layer in range(len(costs), 0, -1):  # wide with the share of allocations that have it wide
            with_wide = ways[layer - 1][units - steps[layer - 1]] if units >= steps[layer - 1] else 0.0
            pick = rng.random() * ways[layer][units] < with_wide
            chosen.append(pick)
            units -= steps[layer - 1] if pick else 0
        chosen.reverse()
        if low <= base + float(np.dot(chosen, delta)) <= high:
            found.setdefault(tuple(chosen), allocation(chosen))
            if len(found) == count:
                break
    return list(found.values())


ENUMERATED_LAYERS = 20
"""``random_allocations`` lists every allocation of models with up to this many layers (2^20 sizes)."""


def _row(count: int, entries: Mapping[int, float]) -> np.ndarray:
    row = np.zeros(count)
    for i, v in entries.items():
        row[i] = v
    return row


def _smallest(costs, widths, pinned, ties, values, index) -> float:
    """The least total of ``values`` any allocation obeying pins and ties can reach (an LP of its own)."""
    count = len(index)
    rows = [_row(count, {index[(c.name, b)]: 1 for b in widths}) for c in costs]
    rows += [_row(count, {index[(n, b)]: 1}) for n, b in pinned.items()]
    rows += [_row(count, {index[(g[0], b)]: 1, index[(o, b)]: -1}) for g in ties for o in list(g)[1:] for b in widths]
    bounds = [1] * len(costs) + [1] * len(pinned) + [0] * (len(rows) - len(costs) - len(pinned))
    solution = milp(values, constraints=LinearConstraint(np.array(rows), bounds, bounds),
                    integrality=np.ones(count), bounds=Bounds(0, 1))
    return float(solution.fun)


def _with_weight(mod, call, weight: np.ndarray):
    """``mod`` with ``call``'s weight constant replaced (same shape and dtype)."""
    from tvm import relax

    from passes.dataflow import function_attrs, main_block, with_main

    block = main_block(mod, "bit_allocation")
    func = mod["main"]
    builder = relax.BlockBuilder()
    with builder.function("main", func.params, attrs=function_attrs(func)):
        with builder.dataflow():
            for binding in block.bindings:
                if binding.value.same_as(call):
                    new = relax.Call(call.op, [call.args[0], relax.const(weight)] + list(call.args[2:]), call.attrs)
                    binding = relax.VarBinding(binding.var, builder.normalize(new))
                builder.emit_normalized(binding)
        builder.emit_func_output(func.body.body)
    return with_main(mod, builder)


def hessian_sensitivity(module, example_inputs: Sequence, widths: Sequence[int] = WIDTHS, probes: int = 8,
                        seed: int = 0) -> dict[tuple[str, int], float]:
    """HAWQ-style sensitivity of a PyTorch classifier: average Hessian trace of each layer's weights as the
    compiler quantizes them (after BatchNorm folding, ``hessian_traces``) times ||Q_b(W) - W||^2 of those
    folded weights.

    The loss is the cross-entropy of the model's logits against its own predictions on ``example_inputs``
    (a batch, or a tuple of input tensors), so no labels are needed. Layers are the model's ``Conv2d`` and
    ``Linear`` modules in call order, named as the compiler names them (``conv2d_i``, ``matmul_i``).
    """
    result = {}
    for name, (trace, weight) in hessian_traces(module, example_inputs, probes, seed).items():
        for bits in widths:  # torch keeps output channels first (OIHW, [out, in])
            error = float(np.sum((rounded_weight(weight, bits, 0) - weight) ** 2))
            result[(name, bits)] = trace / weight.size * error
    return result


def hessian_traces(module, example_inputs: Sequence, probes: int = 8,
                   seed: int = 0) -> dict[str, tuple[float, np.ndarray]]:
    """Per layer: (Hutchinson estimate of the trace of the loss's Hessian with respect to the weight the
    compiler quantizes, that weight). A conv followed by a BatchNorm (eval statistics) is quantized after
    folding, W_f = W * g (g = gamma / sqrt(var + eps) per output channel), so its Hessian is the one of
    W_f: H_f = G^-1 H G^-1, and a probe v of W_f is the probe v / g of W (``fold_batchnorm``'s folding is
    linear in W). ``probes`` Rademacher vectors, seeded."""
    import torch

    layers = _torch_layers(module, example_inputs)
    weights = [m.weight for _, m, _ in layers]
    scales = [(torch.ones(w.shape[0], dtype=w.dtype) if g is None else g.to(w.dtype)).reshape(-1, *[1] * (w.ndim - 1))
              for w, (_, _, g) in zip(weights, layers)]  # broadcast over the output-channel axis
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    logits = module(*inputs)
    if logits.ndim != 2:
        raise AllocationError("Hessian sensitivity needs a classifier with [batch, classes] logits; use "
                              "measured_sensitivity for other models")
    loss = torch.nn.functional.cross_entropy(logits, logits.argmax(1).detach())
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    generator = torch.Generator().manual_seed(seed)
    traces = [0.0] * len(weights)
    for _ in range(probes):
        vs = [(torch.randint(0, 2, w.shape, generator=generator).to(w.dtype) * 2 - 1) / g
              for w, g in zip(weights, scales)]
        hvs = torch.autograd.grad(grads, weights, grad_outputs=vs, retain_graph=True)
        for i, (v, hv) in enumerate(zip(vs, hvs)):
            traces[i] += float((v * hv).sum()) / probes
    return {name: (trace, (layer.weight.detach() * g).numpy())
            for (name, layer, _), trace, g in zip(layers, traces, scales)}


def _torch_layers(module, example_inputs) -> list[tuple[str, object, object]]:
    """(compiler layer name, module, BatchNorm folding scale or None) of every Conv2d / Linear in the order
    the forward pass calls them; the scale is gamma / sqrt(running_var + eps) of a BatchNorm2d that reads
    the conv's output directly (what ``fold_batchnorm`` folds)."""
    import torch

    order: list[object] = []
    produced: dict[int, object] = {}  # id of a conv's output tensor -> the conv
    folded: dict[int, object] = {}  # id of a conv -> its BatchNorm's scale

    def layer_hook(mod, inp, out):
        order.append(mod)
        produced[id(out)] = (mod, out)  # the output held, so its id is not reused during the pass

    def batchnorm_hook(mod, inp, out):
        conv, _ = produced.get(id(inp[0]), (None, None))
        if isinstance(conv, torch.nn.Conv2d):
            gamma = mod.weight.detach() if mod.affine else torch.ones_like(mod.running_var)
            folded[id(conv)] = gamma / torch.sqrt(mod.running_var + mod.eps)

    hooks = [m.register_forward_hook(layer_hook)
             for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks += [m.register_forward_hook(batchnorm_hook)
              for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
            module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    counters = {"conv2d": 0, "matmul": 0}
    named = []
    for layer in order:
        kind = "conv2d" if isinstance(layer, torch.nn.Conv2d) else "matmul"
        named.append((f"{kind}_{counters[kind]}", layer, folded.get(id(layer))))
        counters[kind] += 1
    return named
