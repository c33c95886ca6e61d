"""Quantize an imported model: calibrate, then insert quantize/dequantize pairs per the policy.

Today this yields simulated quantization (the QDQ graph computes in float; ``lower_integer`` is the next
step), which already measures what a scheme and observer do to accuracy.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from frontends import ImportedModel
from passes.check_integer_only import float_islands
from passes.insert_qdq import insert_qdq
from passes.quant_policy import QuantPolicy

from .calibration import PREPARE, Calibration, calibrate
from .pipeline import Pipeline


@dataclass
class QuantizedModel:
    """The QDQ module (ready for the float pipeline), its calibration and the policy that shaped it."""

    imported: ImportedModel
    calibration: Calibration
    policy: QuantPolicy
    info: dict  # what the manifest records: mode, per-layer bits/observer/range, sample count


def quantize(imported: ImportedModel, samples: Iterable[Mapping[str, np.ndarray]],
             policy: QuantPolicy | str = "w8a8", target: Any = None) -> QuantizedModel:
    """Calibrate ``imported`` on ``samples`` and return it with QDQ pairs on every quantized layer."""
    if isinstance(policy, str):
        policy = QuantPolicy.from_scheme(policy)
    calibration = calibrate(imported, samples, policy, target)
    prepared, _ = Pipeline([p for p in PREPARE if p != "expose_activations"]).run(imported.mod)
    specs = policy.resolve(list(calibration.ranges))
    mod = insert_qdq(prepared, specs, calibration.ranges)
    info = {
        "mode": "simulated (QDQ, float arithmetic)",
        "layers": {name: {"weight_bits": s.weight_bits, "activation_bits": s.activation_bits,
                          "observer": s.observer, "range": [round(v, 6) for v in calibration.ranges[name]]}
                   for name, s in specs.items() if s.quantize},
        "calibration_samples": calibration.samples,
        # float ops between the first quantize and the last dequantize, by op: all of them while simulated
        "float_islands": dict(Counter(op for op, _ in float_islands(mod))),
    }
    quantized = ImportedModel(mod, imported.inputs, imported.outputs, dict(imported.source))
    return QuantizedModel(quantized, calibration, policy, info)
