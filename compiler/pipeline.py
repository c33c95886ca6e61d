"""The pipeline: the ordered, named list of passes every compile runs, and how users change it.

The default float pipeline is ``TARGET_INDEPENDENT_PASSES`` then the target's ``BACKEND_LOWERING`` below,
top to bottom (``default_passes(target)``; ``DEFAULT_PASSES`` is the x86 one); a quantized model runs
``QUANTIZED_PASSES`` first (after calibration and ``insert_qdq``, see ``compiler.quantization.quantize``). A spec may
replace the whole list or insert registered passes before/after a named step:

    # pipeline.toml
    passes = ["canonicalize_bindings", "my_pass", "legalize_ops", ...]   # replace the list, or
    [[insert]]
    pass = "my_pass"
    after = "decompose_for_inference"
    options = { threshold = 0.5 }
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import tvm
from tvm import relax

from passes import PassError, get_pass

from .errors import PipelineSpecError

TARGET_INDEPENDENT_PASSES: tuple[str, ...] = (  # every target runs these first
    "canonicalize_bindings",    # tidy the importer's output
    "fold_constant",            # constant bias reshapes -> constants
    "fold_batchnorm",           # conv2d [+ bias] -> batch_norm  =>  conv2d with folded weights + bias
    "decompose_for_inference",  # remaining batch_norm, layer_norm, ... -> arithmetic
    "fold_constant",            # pre-compute weight-only subgraphs
)

_TO_TIR: tuple[str, ...] = (
    "fast_math",                # float32 exp / erf / tanh / GELU / softmax -> vectorizable approximations
    "legalize_ops",             # every Relax op -> a TIR loop nest
    "annotate_op_pattern",      # label each loop nest for fusion
    "fold_constant",            # fold what legalization exposed
    "narrow_constants",         # int64 constants that fit int32 stored as int32 (vpmuldq in the requantize)
    "elementwise_patterns",     # the lookup tables of fuse_tables labelled elementwise (after the folds,
                                # which label them again)
    "fuse_ops",                 # group elementwise tails with their producer
    "fuse_tir",                 # one kernel per group
    "dead_code_elimination",    # drop what fusion left unused
)

BACKEND_LOWERING: dict[str, tuple[str, ...]] = {  # then one of these, by ``backends.lowering_family(target)``
    "x86": (
        "pack_int8_layers",     # uint8 x int8 layers -> kernels over weights packed for 4-wide dot products
        "pack_float_layers",    # float32 conv2d / constant-weight matmul -> kernels for FMA register tiles
        "fuse_tables",          # 8-bit lookup tables (GELU, ...) -> elementwise kernels in their producer's epilogue
        *_TO_TIR,
    ),
    "generic": ("fuse_tables", *_TO_TIR),  # other architectures (aarch64, ...): TVM's loop nests, default schedules
}

DEFAULT_PASSES: tuple[str, ...] = TARGET_INDEPENDENT_PASSES + BACKEND_LOWERING["x86"]
"""The pipeline of an x86 target (this machine's); ``default_passes(target)`` gives any target's."""


def default_passes(target: Any = None) -> tuple[str, ...]:
    """The default pipeline for ``target`` (None: this machine): the target-independent passes, then the
    lowering of the target's backend family (chosen from its kind, triple and features, never its CPU name)."""
    import backends

    return TARGET_INDEPENDENT_PASSES + BACKEND_LOWERING[backends.lowering_family(backends.parse_target(target))]


QUANTIZED_PASSES: tuple[str, ...] = (  # run first on a quantized (QDQ) model, then the default pipeline
    "lower_integer",            # QDQ -> uint8/int8 kernels, int32 accumulators, dyadic requantize
    "check_integer_only",       # fail unless only the declared float islands compute in float
)


@dataclass(frozen=True)
class Step:
    """One pipeline step: a registered pass name and the options it is called with."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.name}({opts})" if opts else self.name


@dataclass(frozen=True)
class StepRecord:
    """What running one step did: its time and the number of Relax and TIR functions after it."""

    name: str
    seconds: float
    functions: int


class Pipeline:
    """An ordered list of pass steps; every name is checked against the registry when the pipeline is built."""

    def __init__(self, steps: Iterable[Step | str]):
        self.steps = [s if isinstance(s, Step) else Step(s) for s in steps]
        for step in self.steps:
            get_pass(step.name)  # raises PassError naming the registered passes

    @classmethod
    def default(cls, target: Any = None) -> "Pipeline":
        """The default pipeline for ``target`` (None: this machine), ``default_passes``."""
        return cls(default_passes(target))

    @classmethod
    def from_spec(cls, spec: "Pipeline | Sequence[str | Step] | str | Path | dict | None",
                  target: Any = None) -> "Pipeline":
        """A pipeline from ``None`` (the default for ``target``), a list of names, a TOML path, or a parsed
        TOML dict (its ``insert`` entries go into the default pipeline for ``target``)."""
        if spec is None:
            return cls.default(target)
        if isinstance(spec, Pipeline):
            return spec
        if isinstance(spec, (str, Path)):
            return cls.from_spec(_read_toml(Path(spec)), target)
        if isinstance(spec, dict):
            return cls._from_dict(spec, target)
        return cls(spec)

    @classmethod
    def _from_dict(cls, spec: dict, target: Any = None) -> "Pipeline":
        unknown = set(spec) - {"passes", "insert"}
        if unknown:
            raise PipelineSpecError(f"unknown key(s) {sorted(unknown)} in pipeline spec; expected 'passes' and/or 'insert'")
        pipeline = cls(spec["passes"]) if "passes" in spec else cls.default(target)
        for entry in spec.get("insert", []):
            if not isinstance(entry, dict) or "pass" not in entry:
                raise PipelineSpecError(f"each [[insert]] needs a 'pass' key, got {entry!r}")
            pipeline = pipeline.insert(entry["pass"], before=entry.get("before"), after=entry.get("after"),
                                       options=entry.get("options"))
        return pipeline

    def insert(self, name: str, *, before: str | None = None, after: str | None = None,
               options: dict[str, Any] | None = None) -> "Pipeline":
        """A new pipeline with pass ``name`` placed before or after the first step named so (or at the end)."""
        if before and after:
            raise PipelineSpecError(f"insert '{name}': give 'before' or 'after', not both")
        names = [s.name for s in self.steps]
        anchor = before or after
        if anchor is None:
            index = len(names)
        elif anchor not in names:
            raise PipelineSpecError(f"insert '{name}': no step '{anchor}' in the pipeline {names}")
        else:
            index = names.index(anchor) + (1 if after else 0)
        steps = list(self.steps)
        steps.insert(index, Step(name, dict(options or {})))
        return Pipeline(steps)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def describe(self) -> str:
        """The pipeline, one numbered line per step with the pass's contract."""
        return "\n".join(f"{i:2d}. {str(s):28s} {get_pass(s.name).contract}" for i, s in enumerate(self.steps, 1))

    def run(self, mod: tvm.IRModule, *, verify: bool = False,
            on_step: Callable[[int, int, str], None] | None = None) -> tuple[tvm.IRModule, list[StepRecord]]:
        """Apply every step in order; with ``verify``, check the module is well formed after each one."""
        records = []
        for index, step in enumerate(self.steps):
            if on_step:
                on_step(index, len(self.steps), step.name)
            start = time.perf_counter()
            mod = get_pass(step.name)(mod, **step.options)
            if verify:
                _check_well_formed(mod, step.name)
            records.append(StepRecord(step.name, time.perf_counter() - start, len(mod.functions)))
        return mod, records

    def __repr__(self) -> str:
        return f"Pipeline({[str(s) for s in self.steps]})"


def _check_well_formed(mod: tvm.IRModule, after: str) -> None:
    try:
        ok = relax.analysis.well_formed(mod)
    except Exception as exc:  # TVM 0.27 raises on an ill-formed module
        raise PassError(f"pass '{after}' produced an ill-formed module: {str(exc).splitlines()[0]}") from exc
    if ok is False:  # older TVM returned a bool
        raise PassError(f"pass '{after}' produced an ill-formed module")


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise PipelineSpecError(f"pipeline spec not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise PipelineSpecError(f"{path}: invalid TOML: {exc}") from exc
