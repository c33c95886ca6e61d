"""From a Relax module to a runnable library: the pipeline's passes, then code generation.

    built = build(imported.mod, target)          # default pipeline, this CPU, untuned
    model = built.model(imported)                # a CompiledModel with a minimal manifest

``compiler.api.compile`` and the quantization workflow (which compiles a model several times over) both
end here, so a float or quantized compile runs the same passes and the same code generation everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import tvm

import backends
from frontends import ImportedModel

from .executable import CompiledModel
from .pipeline import Pipeline, StepRecord


@dataclass
class Built:
    """The library, the module it was generated from, what each pass did and the tuning report."""

    library: Any
    mod: tvm.IRModule
    records: list[StepRecord]
    tuned: dict
    target: tvm.target.Target

    def model(self, imported: ImportedModel) -> CompiledModel:
        """A runnable model whose manifest holds only the inputs and outputs of ``imported``."""
        return CompiledModel(self.library, {"inputs": [t.to_json() for t in imported.inputs],
                                            "outputs": [t.to_json() for t in imported.outputs]},
                             target=self.target)


def build(mod: tvm.IRModule, target: Any = None, *, pipeline: Pipeline | None = None,
          tuning: backends.TuningOptions | None = None, verify: bool = False,
          on_stage: Callable[[str, int, int], None] | None = None) -> Built:
    """Run ``pipeline`` (default: ``default_passes(target)``) on ``mod`` and generate code for ``target``."""
    stage = on_stage or (lambda what, i, n: None)
    target = backends.parse_target(target)
    pipeline = pipeline or Pipeline.default(target)
    with target:  # target-dependent lowering (pack_int8_layers' AMX padding) reads Target.current()
        mod, records = pipeline.run(mod, verify=verify, on_step=lambda i, n, name: stage(f"pass {name}", i, n))
    stage("generating code", 0, 0)
    library, tuned = backends.build(mod, target, tuning, progress=stage)
    return Built(library, mod, records, tuned, target)


def tuning_options(work_dir: Any, trials: int = 0) -> backends.TuningOptions | None:
    """Tuning options for a work directory (None: no database, untuned)."""
    from pathlib import Path

    return None if work_dir is None else backends.TuningOptions(int(trials), Path(work_dir))
