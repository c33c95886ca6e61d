"""Int8 or float per layer: keep a layer in float where its integer kernel, with the conversions a float
island adds around it, is predicted slower than its float kernel.

    decisions = precision_by_layer(prepared, model, weight_bits=8)    # {layer: Decision}
    overrides = {name: LayerSpec(quantize=False) for name, d in decisions.items() if d.float}

A layer kept in float between integer layers reads its input dequantized (uint8 -> float32) and writes
its output to be quantized again (float32 -> uint8): ``glue_ms`` prices those bytes at the overhead fit's
cost per MB of elementwise work (``CostModel.overhead``, the W8A8 scheme's), the price the model gives
every other elementwise tensor. On the shipped ``znver4`` records that price came out 0 (the non-negative fit
carries the glue on the transcendental, data-movement and reduction kinds), so the conversions cost nothing
in its decisions today: the choice is the two kernels'. Each layer is decided on its own (neighbours that both
go to float would share one conversion: the decision is conservative for runs of float layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import tvm

from .features import OVERHEAD_FEATURES, model_layers
from .model import CostModel


@dataclass(frozen=True)
class Decision:
    """A layer's predicted integer and float kernel times, the island's conversions, the choice."""

    integer_ms: float
    float_ms: float
    glue_ms: float

    @property
    def float(self) -> bool:
        return self.float_ms + self.glue_ms < self.integer_ms


def precision_by_layer(prepared: tvm.IRModule, model: CostModel, *, weight_bits: int = 8, activation_bits: int = 8,
                       peaks: Mapping[str, float] | None = None) -> dict[str, Decision]:
    """Per quantizable layer of ``prepared`` (the float module, ``calibration.prepare``): the decision."""
    layers = model_layers(prepared)
    integer = model.predict_ms([layer.features(weight_bits, activation_bits) for layer in layers], peaks)
    floating = model.predict_ms([layer.features(32) for layer in layers], peaks)
    per_mb = model.overhead["w8a8"][OVERHEAD_FEATURES.index("elementwise_mbytes")]
    scale = model.reference_peaks["int8"] / peaks["int8"] if peaks else 1.0
    decisions = {}
    for layer, i_ms, f_ms in zip(layers, integer, floating):
        row = layer.features(32)
        glue = per_mb * (row["in_bytes"] + row["out_bytes"]) / 1e6 * scale
        decisions[layer.name] = Decision(float(i_ms), float(f_ms), glue)
    return decisions
