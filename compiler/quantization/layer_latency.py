"""Per-layer latency of a quantized model at each weight width, measured on its compiled kernels (cached).

    table = measure_layer_latency(imported, samples)     # compiles uniform W8 and W4, times every kernel
    table.layer_ms[("conv2d_0", 4)]                       # that layer's kernel at 4-bit weights, ms
    table.predict({"conv2d_0": 4, ...})                   # overhead + sum of the chosen layers' kernels

For each width the model is compiled with every layer at that width (integer-only, the backend's kernels
as a real compile makes them: a tuning database in ``work_dir`` is applied). One inference runs with a VM
instrument that records every kernel call and its arguments; each call is then timed alone (median of
at least ``repeat`` calls after warm-up, more for short kernels). A quantized layer's kernel is the one whose
name carries the layer's name (``fused_conv2d_3_u8i8_...``: ``lower_integer`` names the accumulator after
the layer, packing and fusion keep it; ``compiler.profile.layer_of``), never the i-th kernel called: on
residual networks the call order is not the layers' order. Everything else (quantize, pooling, residual adds, float islands, the VM's own work) is the
*overhead*: the uniform-W8 model's median latency minus its layers' kernels.

``predict_layer_latency`` gives the same table from the learned cost model (``compiler.costmodel``) without
compiling anything: each layer's kernel predicted at each width from its features, the overhead from the
graph.

Measurements are cached as JSON under ``cache_dir`` (default ``$QC_CACHE_DIR`` or ``~/.cache/qc``), keyed
by the model's structural hash, the target, the widths and the activation bits, so a second compile with a
latency budget costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from frontends import ImportedModel
from passes.quant_plan import quantizable_layers
from passes.quant_policy import LayerSpec, QuantPolicy

from ..bench import median_ms
from ..profile import layer_of
from .calibration import prepare
from .quantize import compile_quantized
from ..errors import CompilerError

CACHE_VERSION = 2  # 1 paired kernels with layers by call order


@dataclass
class LatencyTable:
    """Measured milliseconds: per (layer, weight width) kernel, the rest of the model, whole uniform models."""

    layer_ms: dict[tuple[str, int], float]
    overhead_ms: float
    uniform_ms: dict[int, float]  # weight width -> median latency of the whole uniform model
    seconds: float = 0.0          # what the measurement took (0 when it came from the cache)
    cached: bool = False
    notes: list[str] = field(default_factory=list)

    def predict(self, bits: Mapping[str, int]) -> float:
        """Predicted latency (ms) of the model with these weight widths per layer."""
        return self.overhead_ms + sum(self.layer_ms[(name, b)] for name, b in bits.items())

    def to_json(self) -> dict[str, Any]:
        return {"version": CACHE_VERSION, "overhead_ms": self.overhead_ms,
                "uniform_ms": {str(b): v for b, v in self.uniform_ms.items()},
                "layer_ms": [[name, b, v] for (name, b), v in self.layer_ms.items()]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "LatencyTable":
        return cls({(name, int(b)): float(v) for name, b, v in data["layer_ms"]}, float(data["overhead_ms"]),
                   {int(b): float(v) for b, v in data["uniform_ms"].items()}, cached=True)


def measure_layer_latency(imported: ImportedModel, samples: Iterable[Mapping[str, np.ndarray]], *,
                          widths: Sequence[int] = (4, 8), activation_bits: int = 8, target: Any = None,
                          work_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                          warmup: int = 5, repeat: int = 30) -> LatencyTable:
    """Time every quantized layer's kernel at each weight width (see the module docstring)."""
    samples = list(samples)[:4]  # the ranges do not change the kernels' work: a few samples calibrate
    if not samples:
        raise CompilerError("measuring layer latency needs at least one calibration sample")
    names = [name for name, _ in quantizable_layers(prepare(imported)["main"])]
    cache = _cache_file(imported, target, widths, activation_bits, work_dir, cache_dir)
    if cache.is_file():
        table = LatencyTable.from_json(json.loads(cache.read_text()))
        if {name for name, _ in table.layer_ms} == set(names):
            return table
    started = time.perf_counter()
    layer_ms: dict[tuple[str, int], float] = {}
    uniform_ms: dict[int, float] = {}
    overhead = 0.0
    for bits in widths:
        policy = QuantPolicy(LayerSpec(bits, activation_bits, "minmax"))
        model = compile_quantized(imported, samples, policy, target, work_dir)
        arrays = model.prepare(samples[0])
        kernels = layer_kernel_times(model, arrays, warmup, repeat)
        missing = [name for name in names if name not in kernels]
        if missing:
            raise CompilerError(f"no kernel carries the name of layer(s) {missing} at W{bits}; layer kernels "
                                f"found: {sorted(kernels)}")
        for name in names:
            layer_ms[(name, bits)] = kernels[name]
        uniform_ms[bits] = median_ms(lambda: model.call(arrays), repeat, warmup)
        if bits == max(widths):
            overhead = max(0.0, uniform_ms[bits] - sum(kernels.values()))
    table = LatencyTable(layer_ms, overhead, uniform_ms, seconds=time.perf_counter() - started)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(table.to_json(), indent=1))
    tmp.replace(cache)
    return table


def predict_layer_latency(imported: ImportedModel, model, *, widths: Sequence[int] = (4, 8),
                          activation_bits: int = 8, peaks: Mapping[str, float] | None = None) -> LatencyTable:
    """The table ``measure_layer_latency`` would measure, predicted by ``model`` (a ``costmodel.CostModel``
    for this target and these kernel templates: ``costmodel.for_target``) from the float graph alone, at
    ``peaks`` ({"int8": GOP/s, "fp32": GFLOP/s}; default: the model's reference state, which ``compile``
    uses)."""
    from ..costmodel.features import graph_features, model_layers

    started = time.perf_counter()
    prepared = prepare(imported)
    layers = model_layers(prepared)
    graph = graph_features(prepared)
    overhead = model.overhead_ms("w8a8", graph, peaks)  # quantize, requantize and glue: as in the W8A8 records
    layer_ms, uniform_ms = {}, {}
    for bits in widths:
        predicted = model.predict_ms([layer.features(bits, activation_bits) for layer in layers], peaks)
        layer_ms.update({(layer.name, bits): float(ms) for layer, ms in zip(layers, predicted)})
        uniform_ms[bits] = overhead + float(predicted.sum())
    return LatencyTable(layer_ms, overhead, uniform_ms, seconds=time.perf_counter() - started,
                        notes=[f"predicted by the cost model of {model.cpu} ({model.templates})"])


def layer_kernel_times(model, arrays: list, warmup: int, repeat: int) -> dict[str, float]:
    """Median ms of each quantized layer's kernel, by the layer name the kernel carries (``conv2d_3``);
    kernels without one (pooling's window sums, float matmuls, glue) are not layers."""
    vm = relax.VirtualMachine(model._library, tvm.cpu())
    calls: list[tuple[str, Any, list]] = []

    def instrument(func, symbol, before_run, _ret, *args) -> int:
        if before_run and layer_of(symbol) is not None:
            calls.append((layer_of(symbol), func, list(args)))
        return 0  # VMInstrumentReturnKind.NO_OP: run the call as usual

    vm.set_instrument(instrument)
    vm["main"](*arrays)
    times: dict[str, float] = {}
    for layer, func, args in calls:
        times[layer] = times.get(layer, 0.0) + median_ms(lambda: func(*args), repeat, warmup)
    return times


def _cache_file(imported: ImportedModel, target: Any, widths: Sequence[int], activation_bits: int,
                work_dir: str | Path | None, cache_dir: str | Path | None) -> Path:
    import backends

    root = Path(cache_dir or os.environ.get("QC_CACHE_DIR") or Path.home() / ".cache" / "qc") / "latency"
    key = json.dumps([CACHE_VERSION, int(tvm_ffi.structural_hash(imported.mod)), str(backends.parse_target(target)),
                      sorted(widths), activation_bits, str(Path(work_dir).resolve()) if work_dir else None])
    return root / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
