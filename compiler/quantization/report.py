"""Per-layer diagnosis: for each quantized layer, the SQNR of its output in the quantized model vs float.

Both models run on the same evaluation samples with every layer's output exposed; signal and noise power
are summed per layer as samples stream by (constant memory), and the table is sorted worst first.
    SQNR_dB = 10 * log10( sum(f^2) / sum((f - q)^2) )     f: float output, q: quantized-model output
The error is cumulative: a layer's figure includes what the layers before it already lost. The quantized
model runs in its QDQ form (same scales, same integer weights, float arithmetic), where every layer's output
exists as a float tensor; the integer executable differs from it only by the rounding of the int32 bias and
the dyadic multipliers. The input range is the calibrated range of the tensor the layer reads.

``format_report`` asks another question: per layer, what storing only that layer's weight and input in a
number format (``formats``: int8 / int4 per channel, FP8, the OCP MX block formats) costs its output, as an
SQNR against the float layer on the float model's own activations (no error carried from other layers).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Iterable, Mapping

import numpy as np

from frontends import ImportedModel
from passes.quant_policy import QuantPolicy

from .calibration import ExposedRunner, samples_from_npz
from ..errors import CompilerError
from .quantize import quantize


@dataclass(frozen=True)
class LayerReport:
    """One layer's line of the report."""

    layer: str
    weight_bits: int
    activation_bits: int
    observer: str
    input_range: tuple[float, float]
    sqnr_db: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def layer_report(imported: ImportedModel, calibration: Any, policy: QuantPolicy | str = "w8a8",
                 evaluation: Any = None, target: Any = None) -> list[LayerReport]:
    """Quantize with ``calibration`` samples and measure each layer on ``evaluation`` (default: the same).

    Samples are a sequence of {input name: array} or an .npz path (a one-shot iterator cannot be read twice).
    """
    if isinstance(policy, str):
        policy = QuantPolicy.from_scheme(policy)
    evaluation = calibration if evaluation is None else evaluation
    if not isinstance(evaluation, (Sequence, str, os.PathLike)):
        raise CompilerError("the report reads its samples twice: give a list of samples or an .npz path")
    quantized = quantize(imported, _samples(calibration, imported), policy, target)
    reference = ExposedRunner(imported, target, outputs=True)
    simulated = ExposedRunner(quantized.imported, target, outputs=True)
    signal = dict.fromkeys(reference.names, 0.0)
    noise = dict.fromkeys(reference.names, 0.0)
    first, second = itertools.tee(_samples(evaluation, imported))
    for (_, floats), (_, quants) in zip(reference.run(first), simulated.run(second)):
        for name, f in floats.items():
            f64 = f.astype(np.float64)
            signal[name] += float(np.sum(f64 * f64))
            noise[name] += float(np.sum((f64 - quants[name]) ** 2))
    specs = policy.resolve(reference.names)
    rows = [LayerReport(name, specs[name].weight_bits, specs[name].activation_bits, specs[name].observer,
                        tuple(round(v, 6) for v in quantized.calibration.input_range(name)),
                        _sqnr(signal[name], noise[name]))
            for name in reference.names if specs[name].quantize]
    return sorted(rows, key=lambda row: row.sqnr_db)


def _samples(samples: Any, imported: ImportedModel) -> Iterable[Mapping[str, np.ndarray]]:
    if isinstance(samples, (str, os.PathLike)):
        return samples_from_npz(samples, imported.inputs)
    return samples


def _sqnr(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    return round(10.0 * math.log10(max(signal, 1e-300) / noise), 2)


@dataclass(frozen=True)
class FormatRow:
    """One layer's line of the formats table: the SQNR (dB) of its output with only its own weight and input
    stored in each format, the rest of the model in float."""

    layer: str
    op: str
    sqnr_db: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FormatReport:
    """Per layer (``layers``), and for the whole model with every layer's weight and input in the format:
    its outputs' SQNR against float (``model_sqnr_db``) and the outputs themselves, per sample
    (``model_outputs``; ``"float"`` the float model's, all from the numpy interpreter) for a metric of the
    caller's (top-1 agreement, embedding cosine)."""

    layers: list[FormatRow]
    model_sqnr_db: dict[str, float]
    model_outputs: dict[str, list[list[np.ndarray]]]

    def to_json(self) -> dict[str, Any]:
        return {"layers": [r.to_json() for r in self.layers], "model_sqnr_db": self.model_sqnr_db}


def format_report(imported: ImportedModel, samples: Any, formats: Sequence[str],
                  target: Any = None) -> FormatReport:
    """Each quantizable layer (conv2d / matmul with a constant weight, in program order) on ``samples``: its
    float input (from the float model) and weight each stored in a format (``formats.simulate``: weights per
    output channel or in MX blocks along their reduction, inputs per tensor or in MX blocks along theirs),
    the layer computed again, and the output's SQNR against the float layer's, power summed over the samples.
    Then the whole model in each format: every layer reads its input and weight so stored, the float
    activations of the model in that format (``reference.interpret``, numpy), its outputs' SQNR against the
    float model's."""
    from passes.quant_plan import quantizable_layers

    from .calibration import prepare
    from .formats import get_format
    from .reference import interpret

    chosen = [get_format(name) for name in formats]
    prepared = prepare(imported)
    layers = quantizable_layers(prepared["main"])
    runner = ExposedRunner(imported, target, inputs=True, prepared=prepared)
    weights = {name: call.args[1].value.numpy().astype(np.float64) for name, call in layers}
    stored = {(name, f.name): _stored_weight(f, weights[name], call) for name, call in layers for f in chosen}
    signal = dict.fromkeys(weights, 0.0)
    noise = {key: 0.0 for key in stored}
    model_signal, model_noise = 0.0, dict.fromkeys(formats, 0.0)
    outputs: dict[str, list[list[np.ndarray]]] = {name: [] for name in ["float", *formats]}
    hooks = {f.name: {call: partial(_in_format, f, call, stored[(name, f.name)], weights[name])
                      for name, call in layers} for f in chosen}
    params = [p.name for p in prepared["main"].params]
    samples = list(_samples(samples, imported))
    for (_, inputs), sample in zip(runner.run(samples), samples):
        for name, call in layers:
            x = inputs[name].astype(np.float64)
            exact = _layer(call, x, weights[name])
            signal[name] += float(np.sum(exact * exact))
            for f in chosen:
                approximate = _layer(call, *_operands(f, call, x, stored[(name, f.name)], weights[name]))
                noise[(name, f.name)] += float(np.sum((exact - approximate) ** 2))
        feeds = {param: sample[spec.name] for param, spec in zip(params, imported.inputs)}
        reference = [np.asarray(o, np.float64) for o in interpret(prepared, feeds).outputs]
        outputs["float"].append(reference)
        model_signal += sum(float(np.sum(o * o)) for o in reference)
        for f in chosen:
            result = [np.asarray(o, np.float64) for o in interpret(prepared, feeds, operands=hooks[f.name]).outputs]
            outputs[f.name].append(result)
            model_noise[f.name] += sum(float(np.sum((a - b) ** 2)) for a, b in zip(reference, result))
    rows = [FormatRow(name, call.op.name.split(".")[-1],
                      {f.name: _sqnr(signal[name], noise[(name, f.name)]) for f in chosen}) for name, call in layers]
    return FormatReport(rows, {name: _sqnr(model_signal, model_noise[name]) for name in formats}, outputs)


def _in_format(fmt, call, weight: np.ndarray, float_weight: np.ndarray, args: list) -> list:
    """A layer's evaluated arguments with its input and weight (already stored) in ``fmt``, as float32."""
    x, w = _operands(fmt, call, np.asarray(args[0], np.float64), weight, float_weight)
    return [x.astype(np.float32), w.astype(np.float32), *args[2:]]


def _operands(fmt, call, x: np.ndarray, weight: np.ndarray, float_weight: np.ndarray):
    """(input, weight) of a layer in ``fmt``: the input stored as the format shares its scales, the weight
    as stored; under LLM.int8() a matmul's outlier input columns and their weight rows stay float."""
    if not fmt.per_token or call.op.name == "relax.nn.conv2d":
        return fmt.simulate(x, _input_axis(fmt, call)), weight
    rows = x.reshape(-1, x.shape[-1])  # one token a row, whatever the batch
    outliers = np.zeros(rows.shape[-1], bool)
    if fmt.outlier_threshold is not None:  # LLM.int8(): per input feature, over every token
        outliers = np.abs(rows).max(axis=0) >= fmt.outlier_threshold
    rest = fmt.simulate(np.where(outliers, 0.0, rows), 0)  # one scale per row
    return (np.where(outliers, rows, rest).reshape(x.shape),
            np.where(outliers[:, None], float_weight, weight))


def _input_axis(fmt, call) -> int | None:
    """Where a layer's input shares scales (formats without per-token scales): per tensor, or MX blocks along
    its reduction (a conv's channels, a matmul's last axis)."""
    if fmt.block is None:
        return None
    return 1 if call.op.name == "relax.nn.conv2d" else -1


def _stored_weight(fmt, weight: np.ndarray, call) -> np.ndarray:
    """A layer's weight in ``fmt``: conv OIHW per output channel, or MX blocks along its flattened reduction
    (I x KH x KW); matmul [K, N] per column, or MX blocks along K."""
    if call.op.name == "relax.nn.conv2d":
        flat = weight.reshape(weight.shape[0], -1)
        return fmt.simulate(flat, 0 if fmt.block is None else 1).reshape(weight.shape)
    return fmt.simulate(weight, weight.ndim - 1 if fmt.block is None else weight.ndim - 2)


def _layer(call, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    from .reference import _conv2d

    if call.op.name == "relax.nn.conv2d":
        return _conv2d(call.attrs, x, weight).astype(np.float64)
    return np.matmul(x, weight)


def plot_formats(report: FormatReport, path: str | os.PathLike, title: str = "") -> str:
    """Per format: the layers' SQNR (a box over layers, each layer a dot) and the whole model's (a red bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    formats = list(report.model_sqnr_db)
    finite = lambda v: v if math.isfinite(v) else 150.0  # noqa: E731  (exact: drawn at the top)
    fig, ax = plt.subplots(figsize=(1.1 * len(formats) + 3, 4.2), constrained_layout=True)
    per_layer = [[finite(r.sqnr_db[f]) for r in report.layers] for f in formats]
    ax.boxplot(per_layer, positions=range(len(formats)), widths=0.5, showfliers=False)
    for i, values in enumerate(per_layer):
        ax.scatter(np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values, s=6, color="tab:gray")
    ax.bar(range(len(formats)), [finite(report.model_sqnr_db[f]) for f in formats], width=0.7, alpha=0.25,
           color="tab:red", label="whole model, every layer in the format")
    ax.set_xticks(range(len(formats)), formats, rotation=30, ha="right")
    ax.set_ylabel("output SQNR vs float (dB)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "number formats: each layer alone (box) and the whole model (bar)")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
