"""Calibration: run the float model over user samples and record each quantizable layer's input range.

The model is compiled once with ``expose_activations`` (our own backend, untuned), then each sample runs
through it and every layer's input feeds that layer's streaming observer, so memory does not grow with the
number of samples. Policy decides the observer and bits per layer; an override naming no layer is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

import backends
from frontends import ImportedModel
from frontends.spec import TensorSpec
from passes.expose_activations import ATTRIBUTE
from passes.observers import ObserverError, make_observer
from passes.quant_policy import QuantPolicy

from .errors import CompilerError, InputError
from .executable import CompiledModel, flatten_result
from .pipeline import Pipeline, Step

PREPARE = ("canonicalize_bindings", "fold_constant", "fold_batchnorm", "expose_activations")
LOWER = ("decompose_for_inference", "fold_constant", "legalize_ops", "annotate_op_pattern", "fold_constant",
         "fuse_ops", "fuse_tir", "dead_code_elimination")


class CalibrationError(CompilerError):
    """The calibration set is empty, of the wrong shape, or holds NaN/Inf."""


@dataclass(frozen=True)
class Calibration:
    """Per layer: the (lo, hi) range of its input and the observer that chose it; and the sample count."""

    ranges: dict[str, tuple[float, float]]
    observers: dict[str, str]
    samples: int


def calibrate(imported: ImportedModel, samples: Iterable[Mapping[str, np.ndarray]],
              policy: QuantPolicy | None = None, target: Any = None) -> Calibration:
    """Observe every quantizable layer's input over ``samples`` (dicts of input name -> array)."""
    policy = policy or QuantPolicy()
    runner = ExposedRunner(imported, target)
    specs = policy.resolve(runner.layers)
    observers = {name: make_observer(spec.observer, name, bits=spec.activation_bits,
                                     symmetric=spec.symmetric_activations)
                 for name, spec in specs.items() if spec.quantize}
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
    return Calibration({n: o.range() for n, o in observers.items()},
                       {n: specs[n].observer for n in observers}, count)


class ExposedRunner:
    """``imported`` compiled (untuned) with each quantizable layer's input (or output) returned too."""

    def __init__(self, imported: ImportedModel, target: Any = None, *, outputs: bool = False,
                 prepare: tuple[str, ...] = PREPARE):
        steps = [Step(name, {"outputs": outputs}) if name == "expose_activations" else Step(name)
                 for name in prepare + LOWER]
        mod, _ = Pipeline(steps).run(imported.mod)
        self.layers = [str(name) for name in mod.attrs[ATTRIBUTE]]
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
            exposed = leaves[len(leaves) - len(self.layers):] if self.layers else []
            yield index, {name: tensor.numpy() for name, tensor in zip(self.layers, exposed)}


def samples_from_npz(path: str | Path, inputs: list[TensorSpec]) -> Iterator[dict[str, np.ndarray]]:
    """Samples from an .npz holding, per input name, the samples stacked on a leading axis."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration file not found: {path}")
    data = np.load(path)
    missing = [s.name for s in inputs if s.name not in data.files]
    if missing:
        raise CalibrationError(f"{path} lacks input(s) {missing}; it holds {data.files}")
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

