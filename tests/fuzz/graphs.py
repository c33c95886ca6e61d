"""Seeded random small PyTorch networks for the quantizing compiler's fuzzer.

    graph = generate(17)            # the same graph for the same seed, always (random.Random(seed))
    graph.module()                  # a FuzzNet (torch.nn.Module, eval mode, weights from the seed)
    graph.example_input()           # 1 x C x H x W float32, C in 3..8, H, W in 6..12
    graph.tags, graph.overrides     # the op tags it used; per-layer policy overrides {layer: "float" | "bits"}

A graph is a DAG of ``Node`` s in program order (each reads earlier values by index, value 0 the input), about
4-10 ops drawn from ``OP_TAGS``: convolutions (1x1, 3x3, 5x5, depthwise, strided, padded, with and without
bias), linear / matmul with bias after flatten or global pooling, the activations, scalar constant add /
multiply / subtract, residual adds, squeeze-excite gating and other products of two tensors, channel concat,
max / average / global average pooling, reshape, flatten, transpose. Shapes stay consistent by construction.

Layer names follow ``passes.quant_plan.quantizable_layers``: ``conv2d_i`` for the i-th convolution and
``matmul_i`` for the i-th linear / matmul in program order (the runner checks them against the imported
module). ``overrides`` maps some of them to ``"float"`` (``quantize=False``) or ``"bits"`` (the other weight
width: 4 under W8A8, 8 under W4A8).

Some graphs end in a ReLU / ReLU6 / clip of a layer's output followed by a constant add that nobody reads as
integers (tag ``pattern:act_const_add``): the pattern ``lower_integer``'s ``constant_add_fold`` mutation breaks.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

UNARY = ("relu", "relu6", "clip", "hardswish", "hardsigmoid", "sigmoid", "silu", "tanh", "gelu")
OP_TAGS = (
    "conv1x1", "conv3x3", "conv5x5", "conv_depthwise", "conv_strided", "conv_padded", "conv_bias", "conv_nobias",
    "linear", "matmul", *UNARY, "const_add", "const_mul", "const_sub", "residual_add", "mul_se", "mul_tensors",
    "concat", "max_pool", "avg_pool", "global_avg_pool", "reshape", "flatten", "transpose",
)
"""Every op the generator draws from; the coverage goal is each in >= 5% of graphs."""
PATTERN_TAGS = ("pattern:act_const_add",)
OVERRIDE_TAGS = ("override:float", "override:bits")
MAX_CHANNELS = 24


@dataclass
class Node:
    """One op: ``kind`` with ``params``, reading the values at ``inputs`` (0 = the model input)."""

    kind: str
    inputs: tuple[int, ...]
    params: dict = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    layer: str | None = None  # conv2d_i / matmul_i for a quantizable layer (se: its conv)

    def describe(self) -> str:
        args = ", ".join(f"v{i}" for i in self.inputs)
        params = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind}({args}) {params}".rstrip() + (f"  [{self.layer}]" if self.layer else "")


@dataclass
class Graph:
    seed: int
    input_shape: tuple[int, ...]
    nodes: list[Node]
    shapes: list[tuple[int, ...]]  # of every value, the input first
    overrides: dict[str, str]
    layers: list[str]

    @property
    def tags(self) -> list[str]:
        """The op, pattern and override tags this graph used (sorted, unique)."""
        tags = {t for node in self.nodes for t in node.tags}
        tags |= {f"override:{kind}" for kind in self.overrides.values()}
        return sorted(tags)

    def module(self) -> "FuzzNet":
        return FuzzNet(self).eval()

    def example_input(self) -> torch.Tensor:
        return torch.from_numpy(random_inputs(self, 1, stream=99)[0])

    def describe(self) -> str:
        lines = [f"seed {self.seed}: input {list(self.input_shape)}"]
        for i, node in enumerate(self.nodes, start=1):
            lines.append(f"  v{i} = {node.describe()}  -> {list(self.shapes[i])}")
        if self.overrides:
            lines.append("  overrides: " + ", ".join(f"{k}={v}" for k, v in self.overrides.items()))
        return "\n".join(lines)


def random_inputs(graph: Graph, count: int, stream: int) -> list[np.ndarray]:
    """``count`` inputs from a generator seeded by (graph seed, stream): calibration, evaluation, ... apart."""
    rng = np.random.default_rng([graph.seed, stream])
    return [rng.standard_normal(graph.input_shape).astype(np.float32) for _ in range(count)]


class _Builder:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.seed = seed
        c, h, w = self.rng.randint(3, 8), self.rng.randint(6, 12), self.rng.randint(6, 12)
        self.shapes: list[tuple[int, ...]] = [(1, c, h, w)]
        self.nodes: list[Node] = []
        self.counts = {"conv2d": 0, "matmul": 0}
        self.current = 0

    # -- emitting -------------------------------------------------------------------------------------------
    def emit(self, kind: str, inputs: tuple[int, ...], shape: tuple[int, ...], params=None, tags=(),
             layer_kind: str | None = None) -> int:
        layer = None
        if layer_kind:
            layer = f"{layer_kind}_{self.counts[layer_kind]}"
            self.counts[layer_kind] += 1
        self.nodes.append(Node(kind, tuple(inputs), dict(params or {}), tuple(tags), layer))
        self.shapes.append(tuple(shape))
        self.current = len(self.shapes) - 1
        return self.current

    def shape(self, index: int | None = None) -> tuple[int, ...]:
        return self.shapes[self.current if index is None else index]

    def conv(self, x: int, kind: str | None = None, out: int | None = None, same: bool = False) -> int:
        r = self.rng
        _, c, h, w = self.shape(x)
        kinds = ["1x1", "3x3", "5x5", "depthwise", "strided"]
        kind = kind or r.choice(kinds)
        stride, groups = 1, 1
        if kind == "1x1":
            k, pad = 1, (1 if r.random() < 0.1 and not same else 0)
        elif kind == "3x3":
            k = 3
            pad = 1 if same or min(h, w) < 3 or r.random() < 0.6 else 0
        elif kind == "5x5":
            k = 5
            pad = 2 if same else r.choice([p for p in (0, 1, 2) if min(h, w) + 2 * p >= 5])
        elif kind == "depthwise":
            k = r.choice([3, 5]) if min(h, w) >= 3 else 3
            pad = k // 2
            groups = c
            stride = 1 if same or min(h, w) < 4 else r.choice([1, 1, 2])
        else:  # strided
            if same or min(h, w) < 4:
                return self.conv(x, "3x3", out, same)
            k = r.choice([1, 3, 3])
            pad = k // 2 if k > 1 else 0
            stride = 2
        if groups > 1:
            out = c
        elif out is None:
            out = r.randint(2, 12)
        bias = r.random() < 0.7
        oh = (h + 2 * pad - k) // stride + 1
        ow = (w + 2 * pad - k) // stride + 1
        tags = [f"conv{k}x{k}" if groups == 1 else "conv_depthwise", "conv_bias" if bias else "conv_nobias"]
        if groups > 1 and k in (3, 5):
            tags.append(f"conv{k}x{k}")
        if stride > 1:
            tags.append("conv_strided")
        if pad:
            tags.append("conv_padded")
        params = {"in": c, "out": out, "k": k, "stride": stride, "pad": pad, "groups": groups, "bias": bias}
        return self.emit("conv", (x,), (1, out, oh, ow), params, tags, "conv2d")

    def unary(self, x: int, name: str | None = None) -> int:
        name = name or self.rng.choice(UNARY)
        params = {"op": name}
        if name == "clip":
            params["min"] = round(self.rng.uniform(-3.0, 0.0), 2)
            params["max"] = round(self.rng.uniform(0.5, 4.0), 2)
        return self.emit("unary", (x,), self.shape(x), params, (name,))

    def const(self, x: int, op: str | None = None, value: float | None = None) -> int:
        r = self.rng
        op = op or r.choice(["add", "mul", "sub"])
        if value is None:
            if op == "mul":
                value = round(r.choice([-1, 1]) * r.uniform(0.25, 3.0), 3)
            else:
                value = round(r.uniform(-2.0, 2.0), 3)
        return self.emit("const", (x,), self.shape(x), {"op": op, "value": value}, (f"const_{op}",))

    def dense(self, x: int, kind: str | None = None) -> int:
        kind = kind or self.rng.choice(["linear", "matmul"])
        features = self.shape(x)[-1]
        out = self.rng.randint(3, 16)
        return self.emit(kind, (x,), (1, out), {"in": features, "out": out}, (kind,), "matmul")

    def others(self, predicate) -> list[int]:
        """Earlier 4-D values (not the current one) satisfying ``predicate(shape)``."""
        return [i for i, s in enumerate(self.shapes[:-1]) if i != self.current and len(s) == 4 and predicate(s)]

    # -- spatial steps --------------------------------------------------------------------------------------
    def step(self) -> bool:
        """One random op (or small block) on the current 4-D value; False when the drawn op does not fit."""
        r = self.rng
        x = self.current
        _, c, h, w = self.shape()
        op = r.choices(["conv", "unary", "const", "residual", "se", "mul", "concat", "max_pool", "avg_pool",
                        "reshape", "transpose"],
                       weights=[3.0, 3.6, 1.6, 1.0, 0.6, 0.5, 0.8, 0.7, 0.7, 0.7, 0.5])[0]
        if op == "conv":
            self.conv(x)
        elif op == "unary":
            self.unary(x)
        elif op == "const":
            self.const(x)
        elif op == "residual":
            same = self.others(lambda s: s == (1, c, h, w))
            if same and r.random() < 0.35:
                other = r.choice(same)
            else:
                other = self.conv(x, r.choice(["1x1", "3x3", "depthwise"]), out=c, same=True)
                if r.random() < 0.5:
                    other = self.unary(other, r.choice(["relu", "relu6", "hardswish", "silu"]))
            inputs = (x, other) if r.random() < 0.5 else (other, x)
            self.emit("add", inputs, (1, c, h, w), {}, ("residual_add",))
        elif op == "se":
            layer = f"conv2d_{self.counts['conv2d']}"
            self.counts["conv2d"] += 1
            gate = "sigmoid" if r.random() < 0.75 else "hardsigmoid"
            tags = ("mul_se", "global_avg_pool", "conv1x1", "conv_bias", gate)
            self.nodes.append(Node("se", (x,), {"channels": c, "gate": gate}, tags, layer))
            self.shapes.append((1, c, h, w))
            self.current = len(self.shapes) - 1
        elif op == "mul":
            same = self.others(lambda s: s == (1, c, h, w))
            if same and r.random() < 0.4:
                other = r.choice(same)
            else:
                other = self.conv(x, "1x1", out=c, same=True)
                if r.random() < 0.7:
                    other = self.unary(other, r.choice(["sigmoid", "tanh", "hardsigmoid"]))
            inputs = (x, other) if r.random() < 0.5 else (other, x)
            self.emit("mul", inputs, (1, c, h, w), {}, ("mul_tensors",))
        elif op == "concat":
            same = self.others(lambda s: s[2:] == (h, w) and s[1] + c <= MAX_CHANNELS)
            if same and r.random() < 0.5:
                other = r.choice(same)
            else:
                if c + 2 > MAX_CHANNELS:
                    return False
                other = self.conv(x, r.choice(["1x1", "3x3"]), out=r.randint(2, min(8, MAX_CHANNELS - c)),
                                  same=True)
            inputs = (x, other) if r.random() < 0.5 else (other, x)
            channels = sum(self.shapes[i][1] for i in inputs)
            self.emit("concat", inputs, (1, channels, h, w), {}, ("concat",))
        elif op in ("max_pool", "avg_pool"):
            k = r.choice([2, 3])
            if min(h, w) < k:
                return False
            stride = r.choice([1, 2]) if min(h, w) >= 4 else 1
            pad = r.choice([0, k // 2])
            oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
            self.emit(op, (x,), (1, c, oh, ow), {"k": k, "stride": stride, "pad": pad}, (op,))
        elif op == "reshape":
            if h % 2 == 0 and 2 * c <= MAX_CHANNELS and (c % 2 or r.random() < 0.5):
                shape = (1, 2 * c, h // 2, w)
            elif c % 2 == 0:
                shape = (1, c // 2, 2 * h, w)
            else:
                return False
            self.emit("reshape", (x,), shape, {"shape": list(shape)}, ("reshape",))
        elif op == "transpose":
            if h <= MAX_CHANNELS and r.random() < 0.3:
                self.emit("transpose", (x,), (1, h, c, w), {"dims": [0, 2, 1, 3]}, ("transpose",))
            else:
                self.emit("transpose", (x,), (1, c, w, h), {"dims": [0, 1, 3, 2]}, ("transpose",))
        return True

    def head(self) -> None:
        """Global pooling or flatten, then one or two linear / matmul layers with ops between them."""
        r = self.rng
        x = self.current
        _, c, h, w = self.shape()
        if c * h * w <= 600 and r.random() < 0.45:
            self.emit("flatten", (x,), (1, c * h * w), {}, ("flatten",))
        else:
            how = r.choice(["mean", "adaptive"])
            self.emit("gap", (x,), (1, c), {"how": how}, ("global_avg_pool",))
        self.dense(self.current)
        if r.random() < 0.5:
            if r.random() < 0.7:
                self.unary(self.current)
            else:
                self.const(self.current)
            self.dense(self.current)


def generate(seed: int) -> Graph:
    """The random graph of ``seed`` (deterministic)."""
    b = _Builder(seed)
    r = b.rng
    budget = r.randint(4, 10)
    with_head = r.random() < 0.55
    tail = r.random() < 0.22  # layer -> ReLU / ReLU6 / clip -> constant add, read by no integer op
    attempts = 0
    while len(b.nodes) < budget - (3 if with_head else 0) and attempts < 50:
        attempts += 1
        b.step()
    if not any(n.kind in ("conv", "se") for n in b.nodes):
        b.conv(b.current)
    if with_head:
        b.head()
    if tail:
        if b.nodes[-1].kind not in ("conv", "linear", "matmul"):
            if len(b.shape()) == 4:
                b.conv(b.current)
            else:
                b.dense(b.current)
        act = r.choice(["relu", "relu", "relu6", "clip"])
        before = len(b.nodes)
        b.unary(b.current, act)
        if act == "clip":  # a tight clip, so that clamp(y + c) and clamp(y) + c differ on many elements
            b.nodes[-1].params.update(min=round(r.uniform(-1.0, 0.0), 2), max=round(r.uniform(0.3, 1.0), 2))
        # mostly negative (3 in 4): clamp(y) + c and clamp(y + c) differ on every clamped element when c < 0,
        # which the oracle's end-to-end floor sees (it reads no anchor after this add)
        sign, magnitude = r.choice([-1, 1]), r.uniform(0.5, 2.0)
        value = round(-magnitude if sign < 0 or magnitude > 1.25 else magnitude, 3)
        b.const(b.current, "add", value)
        b.nodes[before].tags += ("pattern:act_const_add",)
    layers = [n.layer for n in b.nodes if n.layer]
    overrides: dict[str, str] = {}
    if r.random() < 0.55:
        for layer in r.sample(layers, min(len(layers), r.choice([1, 1, 2]))):
            overrides[layer] = r.choice(["float", "bits"])
    return Graph(seed, b.shapes[0], b.nodes, b.shapes, overrides, layers)


# -- the PyTorch module -------------------------------------------------------------------------------------
class FuzzNet(nn.Module):
    """Runs a ``Graph``: one submodule / parameter per layer, weights drawn from the graph's seed."""

    def __init__(self, graph: Graph):
        super().__init__()
        self.graph = graph
        self.layers = nn.ModuleDict()
        self.weights = nn.ParameterDict()
        g = torch.Generator().manual_seed(graph.seed)

        def init(t: torch.Tensor, fan_in: int, gain: float = 1.5) -> None:
            with torch.no_grad():
                t.copy_(torch.randn(t.shape, generator=g) * gain / math.sqrt(fan_in))

        for i, node in enumerate(graph.nodes):
            p = node.params
            if node.kind == "conv":
                conv = nn.Conv2d(p["in"], p["out"], p["k"], p["stride"], p["pad"], groups=p["groups"], bias=p["bias"])
                init(conv.weight, p["in"] // p["groups"] * p["k"] ** 2)
                if p["bias"]:
                    init(conv.bias, 1, 0.2)
                self.layers[f"n{i}"] = conv
            elif node.kind == "se":
                conv = nn.Conv2d(p["channels"], p["channels"], 1)
                init(conv.weight, p["channels"], 2.0)
                init(conv.bias, 1, 0.3)
                self.layers[f"n{i}"] = conv
            elif node.kind == "linear":
                linear = nn.Linear(p["in"], p["out"])
                init(linear.weight, p["in"])
                init(linear.bias, 1, 0.2)
                self.layers[f"n{i}"] = linear
            elif node.kind == "matmul":
                self.weights[f"n{i}_w"] = nn.Parameter(torch.empty(p["in"], p["out"]))
                self.weights[f"n{i}_b"] = nn.Parameter(torch.empty(p["out"]))
                init(self.weights[f"n{i}_w"], p["in"])
                init(self.weights[f"n{i}_b"], 1, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = [x]
        for i, node in enumerate(self.graph.nodes):
            values.append(self._apply(i, node, [values[j] for j in node.inputs]))
        return values[-1]

    def _apply(self, i: int, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        p, kind = node.params, node.kind
        x = args[0]
        if kind in ("conv", "linear"):
            return self.layers[f"n{i}"](x)
        if kind == "matmul":
            return torch.matmul(x, self.weights[f"n{i}_w"]) + self.weights[f"n{i}_b"]
        if kind == "unary":
            op = p["op"]
            if op == "clip":
                return torch.clamp(x, p["min"], p["max"])
            return {"relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid,
                    "sigmoid": torch.sigmoid, "silu": F.silu, "tanh": torch.tanh, "gelu": F.gelu}[op](x)
        if kind == "const":
            c = p["value"]
            return {"add": lambda: x + c, "mul": lambda: x * c, "sub": lambda: x - c}[p["op"]]()
        if kind == "add":
            return args[0] + args[1]
        if kind == "mul":
            return args[0] * args[1]
        if kind == "se":
            s = self.layers[f"n{i}"](x.mean((2, 3), keepdim=True))
            return x * (torch.sigmoid(s) if p["gate"] == "sigmoid" else F.hardsigmoid(s))
        if kind == "concat":
            return torch.cat(args, dim=1)
        if kind == "max_pool":
            return F.max_pool2d(x, p["k"], p["stride"], p["pad"])
        if kind == "avg_pool":
            return F.avg_pool2d(x, p["k"], p["stride"], p["pad"])
        if kind == "gap":
            return x.mean((2, 3)) if p["how"] == "mean" else F.adaptive_avg_pool2d(x, 1).flatten(1)
        if kind == "flatten":
            return x.flatten(1)
        if kind == "reshape":
            return x.reshape(p["shape"])
        if kind == "transpose":
            return x.permute(p["dims"])
        raise ValueError(f"unknown node kind {kind!r}")
