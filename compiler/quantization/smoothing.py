"""SmoothQuant's calibration (``QuantPolicy(smoothing=...)``): per smoothable LayerNorm
(``passes.smooth_quant.smoothable``: it feeds linears only), its channels' largest |activation| over the
calibration samples, the per-channel scale s = max|X|^alpha / max|W|^(1 - alpha), and alpha itself when the
policy says "auto": the candidate (``ALPHAS``) whose smoothed linears lose the least to W8A8 on the same
samples, summed over every linear the LayerNorms feed (relative squared error of X W against
Q(X / s) Q(s W): activations per tensor, uint8 over the samples' range; weights int8 per column).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import tvm

from frontends import ImportedModel
from passes.insert_qdq import ActivationParams
from passes.quant_plan import quantizable_layers
from passes.smooth_quant import smooth_quant, smoothable

from .calibration import ExposedRunner
from .formats import simulate

ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
"""The migration strengths "auto" chooses from (the paper's 0.5 for most models, up to 0.75-0.8 for some)."""


def smooth(prepared: tvm.IRModule, imported: ImportedModel, samples: Sequence[Mapping[str, np.ndarray]],
           alpha: float | str, target: Any = None) -> tuple[tvm.IRModule, dict]:
    """``prepared`` with SmoothQuant applied at ``alpha`` (a float, or "auto"), and what was done:
    {"alpha", "layer_norms", "errors" (per candidate alpha, with "auto")}."""
    func = prepared["main"]
    targets = smoothable(func)
    if not targets:
        return prepared, {"alpha": None, "layer_norms": 0}
    calls = dict(quantizable_layers(func))
    weights = {layer: calls[layer].args[1].value.numpy().astype(np.float64) for layers in targets.values()
               for layer in layers}
    runner = ExposedRunner(imported, target, inputs=True, prepared=prepared)
    inputs: dict[str, list[np.ndarray]] = {layer: [] for layer in weights}
    for _, exposed in runner.run(samples):
        for layer in weights:
            x = exposed[layer].astype(np.float64)
            inputs[layer].append(x.reshape(-1, x.shape[-1]))
    stacked = {layer: np.concatenate(rows) for layer, rows in inputs.items()}
    act_max = {name: np.max([np.abs(stacked[layer]).max(axis=0) for layer in layers], axis=0)
               for name, layers in targets.items()}
    w_max = {name: np.max([np.abs(weights[layer]).max(axis=1) for layer in layers], axis=0)
             for name, layers in targets.items()}

    def scales(a: float) -> dict[str, np.ndarray]:
        return {name: _scale(act_max[name], w_max[name], a) for name in targets}

    info: dict = {"layer_norms": len(targets)}
    if alpha == "auto":
        errors = {a: _w8a8_error(stacked, weights, targets, scales(a)) for a in ALPHAS}
        alpha = min(errors, key=errors.get)
        info["errors"] = {str(a): round(e, 6) for a, e in errors.items()}
    info["alpha"] = float(alpha)
    return smooth_quant(prepared, scales(float(alpha))), info


def _scale(act_max: np.ndarray, w_max: np.ndarray, alpha: float) -> np.ndarray:
    s = np.power(act_max, alpha) / np.power(w_max, 1 - alpha)
    return np.where((act_max > 0) & (w_max > 0) & np.isfinite(s) & (s > 0), s, 1.0)


def _w8a8_error(inputs: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
                targets: Mapping[str, list[str]], scales: Mapping[str, np.ndarray]) -> float:
    """Sum over the linears of |X W - Q(X / s) Q(s W)|^2 / |X W|^2."""
    total = 0.0
    for name, layers in targets.items():
        s = scales[name]
        for layer in layers:
            x, w = inputs[layer], weights[layer]
            exact = x @ w
            smoothed = x / s
            act = ActivationParams.from_range(float(smoothed.min()), float(smoothed.max()), 8, symmetric=False)
            codes = np.clip(np.round(smoothed / act.scale) + act.zero_point, act.qmin, act.qmax)
            q = (codes - act.zero_point) * act.scale
            approximate = q @ simulate("int8", w * s.reshape(-1, 1), axis=1)
            total += float(np.sum((exact - approximate) ** 2) / max(np.sum(exact**2), 1e-300))
    return total
