"""Per-layer diagnosis: for each quantized layer, the SQNR of its output in the quantized model vs float.

Both models run on the same evaluation samples with every layer's output exposed; signal and noise power
are summed per layer as samples stream by (constant memory), and the table is sorted worst first.
    SQNR_dB = 10 * log10( sum(f^2) / sum((f - q)^2) )     f: float output, q: quantized-model output
The error is cumulative: a layer's figure includes what the layers before it already lost. The quantized
model runs in its QDQ form (same scales, same integer weights, float arithmetic), where every layer's output
exists as a float tensor; the integer executable differs from it only by the rounding of the int32 bias and
the dyadic multipliers. The input range is the calibrated range of the tensor the layer reads.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
