"""A compiled model in memory: run it, save it as an artifact, or load one back."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tvm
from tvm import relax

from frontends.spec import TensorSpec

from . import artifact
from .errors import ArtifactError, InputError

Inputs = Mapping[str, Any] | Sequence[Any] | Any


class CompiledModel:
    """A Relax VM executable with the names, shapes and dtypes of its inputs and outputs.

    ``run`` takes inputs by name (a mapping) or by position and returns ``{output name: numpy array}``.
    A model compiled for another machine (another architecture, or CPU features this one lacks) can be
    saved but not run: running it raises ``ArtifactError`` saying why.
    """

    def __init__(self, library: Any, manifest: dict[str, Any], origin: Path | None = None,
                 target: tvm.target.Target | None = None):
        self._library = library
        self._origin = origin  # the artifact it was loaded from: a loaded library cannot be re-exported
        self._target = target  # what the library was built for (None: this machine)
        self.manifest = manifest
        self.inputs = [TensorSpec.from_json(t) for t in manifest["inputs"]]
        self.outputs = [TensorSpec.from_json(t) for t in manifest["outputs"]]
        self._main_function = None

    @property
    def _main(self) -> Any:
        """The VM's ``main``, created on first use (never for a library this machine cannot run)."""
        if self._main_function is None:
            from backends import why_not_here

            reason = self._target is not None and why_not_here(self._target)
            if reason:
                raise ArtifactError(f"cannot run this model here: {reason}")
            self._main_function = relax.VirtualMachine(self._library, tvm.cpu())["main"]
        return self._main_function

    def run(self, inputs: Inputs = None, /, **named: Any) -> dict[str, np.ndarray]:
        """Run once; inputs are checked against the model's shapes and dtypes first."""
        arrays = self.prepare(inputs, **named)
        return self.unpack(self._main(*arrays))

    def prepare(self, inputs: Inputs = None, /, **named: Any) -> list[tvm.runtime.Tensor]:
        """Validate inputs and convert them to device tensors in the model's order (for timing loops)."""
        ordered = _order(self.inputs, inputs, named)
        return [tvm.runtime.tensor(_check(spec, value)) for spec, value in zip(self.inputs, ordered)]

    def call(self, arrays: list[tvm.runtime.Tensor]) -> Any:
        """Run on prepared device tensors; returns the raw VM result (no copy back)."""
        return self._main(*arrays)

    def unpack(self, result: Any) -> dict[str, np.ndarray]:
        leaves = flatten_result(result)
        return {spec.name: leaf.numpy() for spec, leaf in zip(self.outputs, leaves)}

    def save(self, path: str | Path) -> Path:
        """Write the artifact directory ``path`` atomically (library + manifest with its checksum)."""
        path = Path(path)
        with artifact.staging(path) as tmp, _native_warnings_hidden():
            if self._origin is not None:
                shutil.copyfile(self._origin / self.manifest["library"]["file"], tmp / artifact.LIBRARY)
            else:
                from backends import linker

                fcompile = linker(self._target) if self._target is not None else None
                self._library.export_library(str(tmp / artifact.LIBRARY), fcompile=fcompile)
            artifact.write_manifest(tmp, self.manifest)
        self.manifest = artifact.read_manifest(path, verify=False)
        return path

    def __repr__(self) -> str:
        ins = ", ".join(f"{t.name}{list(t.shape)}:{t.dtype}" for t in self.inputs)
        outs = ", ".join(f"{t.name}{list(t.shape)}:{t.dtype}" for t in self.outputs)
        return f"CompiledModel(({ins}) -> ({outs}), target={self.manifest.get('target', {}).get('mcpu', '?')})"


def load(path: str | Path) -> CompiledModel:
    """Load an artifact written by ``CompiledModel.save`` after verifying the library's checksum."""
    path = Path(path)
    manifest = artifact.read_manifest(path, verify=True)
    _check_cpu(path, manifest)
    with _native_warnings_hidden():
        library = tvm.runtime.load_module(str(path / manifest["library"]["file"]))
        return CompiledModel(library, manifest, origin=path)


def _check_cpu(path: Path, manifest: dict[str, Any]) -> None:
    """Refuse an artifact this machine cannot run: another architecture (the library would not load) or
    instructions this CPU lacks (it would die of SIGILL mid-run)."""
    from backends import why_not_here

    reason = why_not_here(tvm.target.Target(manifest["target"]))
    if reason:
        raise ArtifactError(f"cannot load {path} here: {reason}; compile the model again here "
                            "(or with --target for this machine)")


def run(model: "CompiledModel | str | Path", inputs: Inputs = None, /, **named: Any) -> dict[str, np.ndarray]:
    """Run a compiled model, or the artifact at a path, once on ``inputs``."""
    compiled = model if isinstance(model, CompiledModel) else load(model)
    return compiled.run(inputs, **named)


@contextlib.contextmanager
def _native_warnings_hidden() -> Iterator[None]:
    """Hide TVM's C++ log lines on stderr (one 'Scope Saving/Loaded' warning per constant in 0.27);
    if the block fails, they are replayed so nothing useful is lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _order(specs: list[TensorSpec], inputs: Inputs, named: dict[str, Any]) -> list[Any]:
    if isinstance(inputs, Mapping):
        named = {**inputs, **named}
        inputs = None
    if inputs is not None and named:
        raise InputError("give inputs either by position or by name, not both")
    if named:
        expected = [s.name for s in specs]
        unknown, missing = sorted(set(named) - set(expected)), [n for n in expected if n not in named]
        if unknown or missing:
            raise InputError(f"inputs do not match the model: missing {missing}, unknown {unknown}; "
                             f"expected {expected}")
        return [named[n] for n in expected]
    values = [] if inputs is None else list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if len(values) != len(specs):
        raise InputError(f"model takes {len(specs)} input(s) {[s.name for s in specs]}, got {len(values)}")
    return values


def _check(spec: TensorSpec, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if str(array.dtype) != spec.dtype:
        raise InputError(f"input '{spec.name}': expected dtype {spec.dtype}, got {array.dtype}")
    if tuple(array.shape) != spec.shape:
        raise InputError(f"input '{spec.name}': expected shape {list(spec.shape)}, got {list(array.shape)}")
    return array if array.flags.c_contiguous else array.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)


def flatten_result(result: Any) -> list[tvm.runtime.Tensor]:
    """The tensors of a VM result (a tensor or nested tuples of them), in order."""
    if isinstance(result, tvm.runtime.Tensor):
        return [result]
    return [leaf for item in result for leaf in flatten_result(item)]
