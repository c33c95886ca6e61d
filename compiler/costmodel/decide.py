"""Int8 or float per layer: keep a layer in float where its integer kernel, with the conversions a float
island adds around it, is predicted slower than its float kernel.

    decisions = precision_by_layer(prepared, model, weight_bits=8)    # {layer: Decision}
    overrides = {name: LayerSpec(quantize=False) for name, d in decisions.items() if d.float}

A layer kept in float between integer layers reads its input dequantized (uint8 -> float32) and writes
its output to be quantized again (float32 -> uint8), and the elementwise ops and reductions around it go to
float with it: a squeeze-excite convolution reads the mean of the whole feature map and its tail multiplies
that map (``LayerShape.island_bytes``). ``glue_ms`` prices the input and the larger of the output and that
island at the overhead fit's dearest cost per MB of elementwise work (``CostModel.overhead``, the W8A8
scheme's, elementwise or transcendental). Priced at the layer's own bytes and the cheaper kind, which the
fit sets to 0, the choice kept 21 of EfficientNet-B0's 82 layers in float (its squeeze-excite
convolutions) and the model ran 1.67x slower than all-int8 (40 alternating rounds, this ``znver4``,
2026-12-08). Each layer is decided on its own (neighbours that both go to float would share one
conversion: the decision is conservative for runs of float layers).
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
    fit = model.overhead["w8a8"]
    per_mb = max(fit[OVERHEAD_FEATURES.index("elementwise_mbytes")], fit[OVERHEAD_FEATURES.index("transcendental_mbytes")])
    scale = model.reference_peaks["int8"] / peaks["int8"] if peaks else 1.0
    decisions = {}
    for layer, i_ms, f_ms in zip(layers, integer, floating):
        row = layer.features(32)
        glue = per_mb * (row["in_bytes"] + max(row["out_bytes"], layer.island_bytes)) / 1e6 * scale
        decisions[layer.name] = Decision(float(i_ms), float(f_ms), glue)
    return decisions
