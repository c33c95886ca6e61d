"""Quantize an imported model: calibrate, insert quantize/dequantize pairs per the policy, lower to integers.

    quantized = quantize(imported, samples, "w8a8")     # calibration + insert_qdq
    quantized.imported                                  # the QDQ module: the pipeline's QUANTIZED_PASSES
                                                        # (lower_integer, check_integer_only) make it integer;
                                                        # run as is (float), it simulates the integer model
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from frontends import ImportedModel
from passes.insert_qdq import grouped, insert_qdq
from passes.quant_plan import quantizable_layers
from passes.quant_policy import FLOAT_OPS, FLOAT_OPS_ATTRIBUTE, QuantPolicy

from ..build import build, tuning_options
from ..executable import CompiledModel
from ..pipeline import QUANTIZED_PASSES, Pipeline, Step
from .calibration import Calibration, calibrate, prepare
from .smoothing import smooth


@dataclass
class QuantizedModel:
    """The QDQ module, its calibration and the policy that shaped it."""

    imported: ImportedModel
    calibration: Calibration
    policy: QuantPolicy
    info: dict  # what the manifest records: per-layer bits/observer/input range, anchors, sample count
    float_mod: Any = None  # the float module it was quantized from (after BatchNorm folding)


def quantize(imported: ImportedModel, samples: Iterable[Mapping[str, np.ndarray]],
             policy: QuantPolicy | str = "w8a8", target: Any = None) -> QuantizedModel:
    """Calibrate ``imported`` on ``samples`` and return it with QDQ pairs on every anchor tensor."""
    if isinstance(policy, str):
        policy = QuantPolicy.from_scheme(policy)
    prepared = prepare(imported)
    smoothing = None
    if policy.smoothing is not None:  # SmoothQuant first: a float model of the same function, calibrated next
        samples = list(samples)
        prepared, smoothing = smooth(prepared, imported, samples, policy.smoothing, target)
    calibration = calibrate(imported, samples, policy, target, prepared=prepared)
    mod = insert_qdq(prepared, calibration.specs, calibration.ranges)
    if policy.float_ops:
        mod["main"] = mod["main"].with_attr(FLOAT_OPS_ATTRIBUTE, [FLOAT_OPS[op] for op in policy.float_ops])
    groups = {name: calibration.specs[name].weight_group for name, call in quantizable_layers(prepared["main"])
              if name in calibration.specs and grouped(call, calibration.specs[name])}
    info = {
        "layers": {name: {"weight_bits": s.weight_bits, "activation_bits": s.activation_bits,
                          "observer": s.observer, "input_range": _rounded(calibration.input_range(name)),
                          **({"weight_group": groups[name]} if name in groups else {})}
                   for name, s in calibration.specs.items() if s.quantize},
        "tensors": {name: _rounded(r) for name, r in calibration.ranges.items()},
        "calibration_samples": calibration.samples,
    }
    if smoothing is not None:
        info["smoothing"] = smoothing
    quantized = ImportedModel(mod, imported.inputs, imported.outputs, dict(imported.source))
    return QuantizedModel(quantized, calibration, policy, info, prepared)


def _rounded(value_range):
    return None if value_range is None else [round(float(v), 6) for v in value_range]


def lower(quantized: QuantizedModel, verify: bool = False, strict: bool = False):
    """The QDQ module through ``QUANTIZED_PASSES`` (integer lowering, the checker; ``strict``: no float
    island allowed): (module, step records)."""
    if not quantized.info["layers"]:  # the policy keeps every layer in float: a float model, nothing to lower
        return quantized.imported.mod, []
    steps = [Step(name, {"strict": True}) if strict and name == "check_integer_only" else Step(name)
             for name in QUANTIZED_PASSES]
    return Pipeline(steps).run(quantized.imported.mod, verify=verify)


def compile_quantized(imported: ImportedModel, samples: Iterable[Mapping[str, np.ndarray]],
                      policy: QuantPolicy | str = "w8a8", target: Any = None, work_dir: Any = None) -> CompiledModel:
    """Quantize, lower and build ``imported`` as ``compiler.compile`` does, with a minimal manifest."""
    quantized = quantize(imported, samples, policy, target)
    mod, _ = lower(quantized)
    return build(mod, target, tuning=tuning_options(work_dir)).model(imported)


def compile_float(imported: ImportedModel, target: Any = None, work_dir: Any = None) -> CompiledModel:
    """Build ``imported`` in float as ``compiler.compile`` does, with a minimal manifest."""
    return build(imported.mod, target, tuning=tuning_options(work_dir)).model(imported)
