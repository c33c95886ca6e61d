"""What the cost model knows about a layer before anything is built: its op, shapes, widths and neighbours.

    layers = model_layers(prepared)                        # [LayerShape], the plan's names and order
    row = layers[0].features(weight_bits=8)                # {feature: number}, FEATURES order
    layers[0].key(8)                                       # (op, shapes, widths): what leave-one-out drops

Every feature is read from the float Relax module the quantization workflow starts from
(``compiler.quantization.calibration.prepare``: batchnorm folded, weights constant), so a prediction needs
no compile. A layer is one of the plan's quantizable layers (``passes.quant_plan.quantizable_bindings``:
conv2d or matmul with a constant weight), which the backend computes as one kernel named after it
(``conv2d_3_u8i8``, ``conv2d_3_u8i4``, ``conv2d_3_f32``); the features describe that kernel's work:

- ``op``: 0 a dense convolution, 1 a pointwise (1x1, stride 1) one, 2 a depthwise one, 3 a matmul;
- the GEMM it amounts to: ``m`` output pixels (or rows), ``n`` output channels (or columns), ``k`` the
  reduction per output, with their padding to the kernels' lanes (16) and dot-product groups (4);
- the convolution's geometry (input and output sizes, window, stride, groups);
- widths: ``weight_bits`` (4, 8, 32 for float), ``activation_bits`` (8, or 32 for float), ``weight_group``
  (group-wise 4-bit weights; 0 for none);
- work and traffic: MACs, input / weight / output bytes at those widths, MACs per byte;
- the epilogue, which fusion puts in the kernel: whether the result meets a residual add (an add of two
  computed tensors) within a few elementwise steps, and the activation on the way (``activation``: 0 none,
  1 a clamp such as ReLU / ReLU6 / hardswish's, 2 a transcendental one: sigmoid, SiLU, tanh, GELU, exp).
  EfficientNet-B0's float depthwise kernels, whose SiLU fusion puts in the epilogue, run 10-20x slower than
  EfficientNet-Lite0's of the same shape with ReLU6 (collected on ``znver4``, 2026-12-08).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import tvm
from tvm import relax

from passes.quant_plan import quantizable_bindings
from passes.dataflow import op_name

OPS = {"conv": 0, "pointwise": 1, "depthwise": 2, "matmul": 3}

FEATURES: tuple[str, ...] = (
    "op", "weight_bits", "activation_bits", "weight_group",
    "m", "n", "k", "m_fill", "n_fill", "k_fill",
    "c_in", "h_in", "w_in", "h_out", "w_out", "kh", "kw", "stride", "groups",
    "macs", "log_macs", "in_bytes", "weight_bytes", "out_bytes", "macs_per_byte", "residual", "activation",
)
"""The feature vector's order (the regressor sees these columns)."""

_CLAMPS = {"relax.nn.relu", "relax.clip", "relax.minimum", "relax.maximum", "relax.nn.relu6"}
_TRANSCENDENTAL = {"relax.nn.gelu", "relax.nn.gelu_tanh", "relax.nn.silu", "relax.sigmoid", "relax.tanh",
                   "relax.exp", "relax.erf"}
_ELEMENTWISE_STEPS = {"relax.add", "relax.multiply", "relax.subtract", "relax.divide", "relax.astype",
                      "relax.reshape", *_CLAMPS, *_TRANSCENDENTAL}  # a reshape moves no element


@dataclass(frozen=True)
class LayerShape:
    """One quantizable layer's geometry, as the float graph gives it."""

    name: str        # the plan's name (``conv2d_3``)
    op: str          # a key of ``OPS``
    m: int           # output pixels (convolution) or rows (matmul, every leading axis)
    n: int           # output channels / columns
    k: int           # reduction per output (c_in / groups x kh x kw, or the matmul's K)
    c_in: int = 0
    h_in: int = 0
    w_in: int = 0
    h_out: int = 0
    w_out: int = 0
    kh: int = 1
    kw: int = 1
    stride: int = 1
    groups: int = 1
    residual: bool = False
    activation: int = 0  # 0 none, 1 a clamp, 2 a transcendental function
    island_bytes: float = 0.0  # the largest float32 tensor the elementwise ops and reductions around it touch
                               # (not a feature: what a float island around the layer would also convert)

    @property
    def macs(self) -> int:
        return self.m * self.n * self.k

    def features(self, weight_bits: int, activation_bits: int = 8, weight_group: int = 0) -> dict[str, float]:
        """The feature row of this layer's kernel at these widths (``weight_bits`` 32: a float32 kernel)."""
        if weight_bits == 32:
            activation_bits = 32
        in_elements = self.m * self.k if self.op == "matmul" else self.c_in * self.h_in * self.w_in
        in_bytes = in_elements * activation_bits / 8
        weight_bytes = self.n * self.k * weight_bits / 8
        out_bytes = self.m * self.n * (4 if weight_bits == 32 else 1)
        return {
            "op": OPS[self.op], "weight_bits": weight_bits, "activation_bits": activation_bits,
            "weight_group": weight_group,
            "m": self.m, "n": self.n, "k": self.k,
            "m_fill": self.m / _round_up(self.m, 16), "n_fill": self.n / _round_up(self.n, 16),
            "k_fill": self.k / _round_up(self.k, 4),
            "c_in": self.c_in, "h_in": self.h_in, "w_in": self.w_in, "h_out": self.h_out, "w_out": self.w_out,
            "kh": self.kh, "kw": self.kw, "stride": self.stride, "groups": self.groups,
            "macs": self.macs, "log_macs": math.log2(max(self.macs, 1)),
            "in_bytes": in_bytes, "weight_bytes": weight_bytes, "out_bytes": out_bytes,
            "macs_per_byte": self.macs / (in_bytes + weight_bytes + out_bytes), "residual": int(self.residual),
            "activation": self.activation,
        }

    def key(self, weight_bits: int, activation_bits: int = 8) -> str:
        """(op, shapes, widths) as one string: two layers with the same key are the same kernel's work, so
        leave-one-model-out drops every training record that shares a key with the held-out model."""
        return (f"{self.op}:{self.m}x{self.n}x{self.k}:{self.c_in}x{self.h_in}x{self.w_in}:{self.kh}x{self.kw}"
                f"/{self.stride}/{self.groups}:w{weight_bits}a{32 if weight_bits == 32 else activation_bits}")


def model_layers(prepared: tvm.IRModule) -> list[LayerShape]:
    """Every quantizable layer of ``prepared``'s ``main`` (the plan's names and order) with its geometry."""
    func = prepared["main"]
    readers = _readers(func)
    producers = {b.var: b.value for b in func.body.blocks[0].bindings if isinstance(b.value, relax.Call)}
    return [_shape(name, binding, readers, producers) for name, binding in quantizable_bindings(func)]


_MOVES = {"relax.permute_dims", "relax.concat", "relax.nn.pad", "relax.broadcast_to", "relax.expand_dims",
          "relax.strided_slice", "relax.take", "relax.split"}
_NORMALIZING = {"relax.nn.layer_norm", "relax.nn.softmax", "relax.mean", "relax.max", "relax.sum",
                "relax.variance", "relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d"}
_FREE = {"relax.reshape"}  # a view: no element moves

OVERHEAD_FEATURES = ("other_ops", "elementwise_mbytes", "transcendental_mbytes", "move_mbytes", "reduce_mbytes")
"""The graph features the time outside the layer kernels is fitted on (``model.CostModel.overhead``)."""


def graph_features(prepared: tvm.IRModule) -> dict[str, float]:
    """What the time outside the layer kernels scales with: per kind of op (elementwise, transcendental
    elementwise, data movement, reductions and pooling), the megabytes of the largest tensor each op reads
    or writes (at float32, as the graph declares them), and the count of such ops."""
    layers = {binding.var for _, binding in quantizable_bindings(prepared["main"])}
    features = dict.fromkeys(OVERHEAD_FEATURES, 0.0)
    for binding in prepared["main"].body.blocks[0].bindings:
        name = op_name(binding.value)
        if binding.var in layers or not isinstance(binding.value, relax.Call) or name in _FREE:
            continue
        sizes = [_bytes(e) for e in (binding.var, *binding.value.args)]
        megabytes = max(sizes) / 1e6
        if not megabytes:
            continue
        kind = ("move" if name in _MOVES else "reduce" if name in _NORMALIZING else
                "transcendental" if name in _TRANSCENDENTAL else "elementwise")
        features[f"{kind}_mbytes"] += megabytes
        features["other_ops"] += 1
    return features


def _bytes(expr: relax.Expr) -> float:
    ty = getattr(expr, "ty", None)
    if isinstance(ty, relax.TensorType) and ty.shape is not None:
        return math.prod(int(d) for d in ty.shape) * 4.0
    return 0.0


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _dims(expr: relax.Expr) -> list[int]:
    return [int(d) for d in expr.ty.shape]


def _shape(name: str, binding: relax.VarBinding, readers: dict[Any, list[relax.Call]],
           producers: dict[Any, relax.Call]) -> LayerShape:
    call = binding.value
    residual, activation = _epilogue(binding.var, readers)
    tail = max(_tail_bytes(binding.var, readers), _head_bytes(call.args[0], producers))
    weight = _dims(call.args[1])
    if op_name(call) == "relax.matmul":
        data = _dims(call.args[0])
        return LayerShape(name, "matmul", math.prod(data[:-1]), weight[-1], weight[-2], residual=residual,
                          activation=activation, island_bytes=tail)
    _, c_in, h_in, w_in = _dims(call.args[0])
    _, c_out, h_out, w_out = _dims(binding.var)
    groups, (kh, kw) = int(call.attrs.groups), weight[2:]
    stride = int(call.attrs.strides[0])
    op = ("depthwise" if groups == c_in == c_out and groups > 1 else
          "pointwise" if kh == kw == 1 and stride == 1 and groups == 1 else "conv")
    return LayerShape(name, op, h_out * w_out, c_out, c_in // groups * kh * kw, c_in, h_in, w_in, h_out, w_out,
                      kh, kw, stride, groups, residual, activation, tail)


def _readers(func: relax.Function) -> dict[Any, list[relax.Call]]:
    """Var -> the calls that read it, with the var each call binds (``(var, call)`` pairs)."""
    readers: dict[Any, list] = {}
    for binding in func.body.blocks[0].bindings:
        if isinstance(binding.value, relax.Call):
            for arg in binding.value.args:
                if isinstance(arg, relax.Var):
                    readers.setdefault(arg, []).append((binding.var, binding.value))
    return readers


def _tail_bytes(var: relax.Var, readers: dict, steps: int = 6) -> float:
    """The bytes of the largest tensor that the elementwise ops reading ``var`` (and their elementwise
    readers, ``steps`` deep) read or write: a squeeze-excite convolution's tail multiplies the whole feature
    map, which a float island around the convolution would take into float too."""
    largest, frontier = 0.0, [var]
    for _ in range(steps):
        following = []
        for value in frontier:
            for bound, call in readers.get(value, []):
                if op_name(call) in _ELEMENTWISE_STEPS:
                    largest = max(largest, *(_bytes(e) for e in (bound, *call.args)))
                    following.append(bound)
        frontier = following
    return largest


def _head_bytes(data: relax.Expr, producers: dict, steps: int = 3) -> float:
    """The bytes of the largest tensor read by the elementwise ops and reductions that produce ``data``,
    ``steps`` deep: a squeeze-excite convolution reads the mean of the whole feature map, which a float
    island around the convolution would compute in float."""
    largest, frontier = 0.0, [data]
    for _ in range(steps):
        following = []
        for value in frontier:
            call = producers.get(value) if isinstance(value, relax.Var) else None
            if call is not None and (op_name(call) in _ELEMENTWISE_STEPS or op_name(call) in _NORMALIZING):
                largest = max(largest, *(_bytes(a) for a in call.args))
                following += [a for a in call.args if isinstance(a, relax.Var)]
        frontier = following
    return largest


def _epilogue(var: relax.Var, readers: dict, steps: int = 4) -> tuple[bool, int]:
    """(whether ``var`` reaches a residual add, the activation met on the way: 0 / 1 / 2), following at
    most ``steps`` elementwise ops that are the value's only reader. A value read twice ends the walk: by a
    transcendental among its readers (SiLU's x * sigmoid(x)) the activation is 2, by elementwise readers
    only (hardswish's x * relu6(x + 3) / 6) at least 1."""
    activation = 0
    for _ in range(steps):
        found = readers.get(var, [])
        names = [op_name(call) for _, call in found]
        if any(name in _TRANSCENDENTAL for name in names):
            return False, 2
        if len(found) > 1 and all(name in _ELEMENTWISE_STEPS for name in names):
            return False, max(activation, 1)  # hardswish's x * relu6(x + 3) / 6 reads x twice
        if len(found) != 1 or names[0] not in _ELEMENTWISE_STEPS:
            return False, activation
        bound, call = found[0]
        if names[0] == "relax.add" and all(isinstance(a, relax.Var) for a in call.args):
            return True, activation
        if names[0] in _CLAMPS:
            activation = max(activation, 1)
        var = bound
    return False, activation
