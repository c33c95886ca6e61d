"""Calibration: run the float model over user samples and record the range of every tensor that gets a scale.

Those tensors are the anchors of ``passes.quant_plan`` (layer inputs, the outputs of layer / add / mean
groups that stay integer). The model is compiled once with ``expose_activations`` (our own backend,
untuned), then each sample runs through it and every anchor feeds its own streaming observer, so memory does
not grow with the number of samples. Policy decides the observer and bits per layer (an anchor takes the
spec of the layer that reads it); an override naming no layer is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import tvm

import backends
from frontends import ImportedModel
from frontends.spec import TensorSpec
from passes.dataflow import op_name
from passes.expose_activations import ATTRIBUTE
from passes.observers import ObserverError, make_observer
from passes.quant_plan import plan_quantization, policy_names
from passes.quant_policy import LayerSpec, QuantPolicy

from ..errors import CompilerError, InputError, read_npz
from ..executable import CompiledModel, flatten_result
from ..pipeline import Pipeline, Step

PREPARE = ("canonicalize_bindings", "fold_constant", "fold_batchnorm")
LOWER = ("decompose_for_inference", "fold_constant", "legalize_ops", "annotate_op_pattern", "fold_constant",
         "fuse_ops", "fuse_tir", "dead_code_elimination")


class CalibrationError(CompilerError):
    """The calibration set is empty, of the wrong shape, or holds NaN/Inf."""


@dataclass(frozen=True)
class Calibration:
    """Per anchor tensor: its (lo, hi) range and the observer that chose it; per layer: its spec and the
    anchor its input comes from; and the sample count."""

    ranges: dict[str, tuple[float, float]]
    observers: dict[str, str]
    samples: int
    specs: dict[str, LayerSpec]
    layer_inputs: dict[str, str]

    def input_range(self, layer: str) -> tuple[float, float] | None:
        """The calibrated range of ``layer``'s data input (None for a layer left in float)."""
        anchor = self.layer_inputs.get(layer)
        return self.ranges[anchor] if anchor else None


KNOWN_RANGES = {"relax.nn.softmax": (0.0, 1.0)}
"""Ops whose output range is known: their anchors take it instead of an observer's (probabilities from
softmax are quantized on [0, 1], steps of 1/255: a percentile observer clipped the largest ones, and PP-OCRv4's
recogniser read a space too many once its attention ran in integers)."""


def calibrate(imported: ImportedModel, samples: Iterable[Mapping[str, np.ndarray]],
              policy: QuantPolicy | None = None, target: Any = None, *,
              prepared: tvm.IRModule | None = None) -> Calibration:
    """Observe every anchor tensor over ``samples`` (dicts of input name -> array); ``prepared`` is
    ``prepare(imported)`` when the caller already has it."""
    policy = policy or QuantPolicy()
    prepared = prepare(imported) if prepared is None else prepared
    func = prepared["main"]
    specs = policy.resolve(policy_names(func))
    plan = plan_quantization(func, specs)
    runner = ExposedRunner(imported, target, specs=specs, prepared=prepared)
    producers = {b.var: op_name(b.value) for b in func.body.blocks[0].bindings}
    known = {name: KNOWN_RANGES[producers[a.var]] for name, a in plan.anchors.items()
             if producers.get(a.var) in KNOWN_RANGES}
    observers = {name: make_observer(a.spec.observer, name, bits=a.spec.activation_bits,
                                     symmetric=a.spec.symmetric_activations)
                 for name, a in plan.anchors.items() if name not in known}
    count = 0
    for index, activations in runner.run(samples):
        for name, tensor in activations.items():
            if name in observers:
                try:
                    observers[name].observe(tensor)
                except ObserverError as exc:
                    raise CalibrationError(f"calibration sample {index}: {exc}") from None
        count += 1
    if count == 0:
        raise CalibrationError("the calibration set is empty: give at least one sample")
    return Calibration({**{n: o.range() for n, o in observers.items()}, **known},
                       {n: f"range of {producers[a.var]}" if n in known else a.spec.observer
                        for n, a in plan.anchors.items()}, count, specs, plan.layer_inputs)


def prepare(imported: ImportedModel):
    """The float module the quantization passes start from (batchnorm folded, weights constant)."""
    mod, _ = Pipeline(list(PREPARE)).run(imported.mod)
    return mod


class ExposedRunner:
    """``imported`` compiled (untuned) with every anchor (or, outputs=True, each layer's result; inputs=True,
    the data each layer reads) returned too."""

    def __init__(self, imported: ImportedModel, target: Any = None, *, outputs: bool = False,
                 specs: dict[str, LayerSpec] | None = None, prepared: tvm.IRModule | None = None,
                 inputs: bool = False):
        prepared = prepare(imported) if prepared is None else prepared
        steps = [Step("expose_activations", {"outputs": outputs, "specs": specs, "inputs": inputs})] + [
            Step(n) for n in LOWER]
        mod, _ = Pipeline(steps).run(prepared)
        self.names = [str(name) for name in mod.attrs[ATTRIBUTE]]
        library, _ = backends.build(mod, backends.parse_target(target))
        manifest = {"inputs": [s.to_json() for s in imported.inputs], "outputs": []}
        self._model = CompiledModel(library, manifest)

    def run(self, samples: Iterable[Mapping[str, np.ndarray]]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """For each sample: its index and {layer name: exposed tensor}; bad samples raise CalibrationError."""
        for index, sample in enumerate(samples):
            _check_finite(sample, index)
            try:
                arrays = self._model.prepare(sample)
            except InputError as exc:
                raise CalibrationError(f"calibration sample {index}: {exc}") from None
            leaves = flatten_result(self._model.call(arrays))
            exposed = leaves[len(leaves) - len(self.names):] if self.names else []
            yield index, {name: tensor.numpy() for name, tensor in zip(self.names, exposed)}


def samples_from_npz(path: str | Path, inputs: list[TensorSpec]) -> Iterator[dict[str, np.ndarray]]:
    """Samples from an .npz holding, per input name, the samples stacked on a leading axis."""
    path = Path(path)
    data = read_npz(path, CalibrationError, "calibration")
    missing = [s.name for s in inputs if s.name not in data]
    if missing:
        raise CalibrationError(f"{path} lacks input(s) {missing}; it holds {sorted(data)}")
    stacks = {s.name: _as_stack(data[s.name], s, path) for s in inputs}
    counts = {len(v) for v in stacks.values()}
    if len(counts) != 1:
        raise CalibrationError(f"{path}: inputs hold different numbers of samples {sorted(counts)}")
    for i in range(counts.pop()):
        yield {name: stack[i] for name, stack in stacks.items()}


def _as_stack(array: np.ndarray, spec: TensorSpec, path: Path) -> np.ndarray:
    if array.shape[1:] == spec.shape:
        return array
    if spec.shape and spec.shape[0] == 1 and array.shape[1:] == spec.shape[1:]:
        return array[:, None]
    raise CalibrationError(f"{path}: input '{spec.name}' has shape {list(array.shape)}; expected "
                           f"[N, {', '.join(map(str, spec.shape))}] (N samples stacked on a leading axis)")


def _check_finite(sample: Mapping[str, Any], index: int) -> None:
    for name, value in sample.items():
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise CalibrationError(f"calibration sample {index}, input '{name}': holds NaN or Inf")

