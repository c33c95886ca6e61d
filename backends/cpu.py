"""The CPU backend: LLVM code for the host (or a given x86/ARM CPU), optionally tuned by MetaSchedule.

Requires: a Relax module after the pipeline's ``legalize_ops`` / ``fuse_tir`` steps (TIR PrimFuncs called
from ``main``). Guarantees: a Relax VM executable for ``target``. The packed kernels of
``pack_int8_layers`` and ``pack_float_layers`` always get the schedules of ``backends.x86_packed`` (default
register tiles, or the tuned ones of the work directory's ``int8_knobs.json``); the other kernels get the best schedule of the work
directory's MetaSchedule database when it has one, else ``backends.cpu_default``'s (parallel outer loops,
vector lanes). A tuning budget goes to the int8 tiles first, the rest to MetaSchedule, each tuning only what
its database lacks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import tvm
from tvm import relax
from tvm.target import Target

from .errors import BackendError
from .intrinsics import import_cpu_intrinsics
from .cpu_default import schedule_defaults
from .int8_tuning import KnobDatabase, tune_int8
from .targets import KERNEL_FEATURES, host_target, missing_features  # noqa: F401  (re-exported)
from .x86_high_product import tir_pipeline
from .x86_packed import schedule_packed_kernels

Progress = Callable[[str, int, int], None]  # (what, done, total)


def parse_target(target: str | dict | Target | None) -> Target:
    """A ``Target`` from ``None`` (the host), ``"host"``, a JSON dict, a JSON string or a Target."""
    if target is None or target == "host":
        return host_target()
    if isinstance(target, Target):
        return target
    try:
        return Target(target)
    except Exception as exc:
        raise BackendError(f"invalid target {target!r}: {str(exc).splitlines()[0]}") from exc


@dataclass(frozen=True)
class TuningOptions:
    """MetaSchedule tuning: ``trials`` measured candidates in all, split over the kernels not yet tuned;
    the database lives in ``work_dir`` and is reused by later compiles."""

    trials: int
    work_dir: Path

    def __post_init__(self) -> None:
        if self.trials < 0:
            raise BackendError(f"tuning trials must be >= 0, got {self.trials}")


def build(mod: tvm.IRModule, target: Target, tuning: TuningOptions | None = None,
          progress: Progress | None = None) -> tuple[relax.VMExecutable, dict[str, Any]]:
    """Compile ``mod`` for ``target``; with ``tuning``, tune missing kernels and apply the database.

    Returns the executable and a tuning report (empty without tuning; see ``tune``)."""
    report: dict[str, Any] = {}
    choose = None
    if tuning is not None and tuning.trials > 0:
        from .targets import why_not_here

        reason = why_not_here(target)
        if reason:
            raise BackendError(f"cannot tune for this target: tuning times kernels on this machine, and {reason}")
    if tuning is not None:
        tuning.work_dir.mkdir(parents=True, exist_ok=True)
        database = KnobDatabase(tuning.work_dir)
        report = tune_int8(mod, target, database, tuning.trials, progress=progress)
        choose = lambda func: database.lookup(target, func)  # noqa: E731
    mod = schedule_packed_kernels(mod, target, choose=choose)  # the packed layers: our own schedules
    if tuning is not None:
        if tuning.trials > report.get("int8_trials", 0):
            report.update(tune(mod, target, TuningOptions(tuning.trials - report["int8_trials"], tuning.work_dir),
                               progress))
        with target:
            mod = relax.transform.MetaScheduleApplyDatabase(str(tuning.work_dir))(mod)
    mod = schedule_defaults(mod)  # what neither schedule covers: parallel outer loops, vector lanes
    try:
        return tvm.compile(mod, target=target, tir_pipeline=tir_pipeline(target)), report
    except Exception as exc:
        raise BackendError(f"code generation for {target.kind.name} ({target.attrs.get('mcpu', '')}) "
                           f"failed: {str(exc).strip().splitlines()[0]}") from exc


MIN_TRIALS_PER_KERNEL = 4
"""Fewer trials than this per kernel buy little: a smaller budget tunes fewer (the heaviest) kernels."""


def tune(mod: tvm.IRModule, target: Target, options: TuningOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Tune the heaviest kernels of ``mod`` that the database lacks, within ``options.trials``.

    Kernels are ranked by estimated FLOPs times occurrences; each chosen kernel gets at least
    ``MIN_TRIALS_PER_KERNEL`` trials, so a small budget tunes a few heavy kernels well rather than all of
    them barely. Returns counts: kernels in the model, already in the database, tuned now, left untuned.
    """
    from tvm.s_tir import meta_schedule as ms

    import_cpu_intrinsics()
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)  # full logs stay in work_dir/logs
    database = ms.database.JSONDatabase(work_dir=str(options.work_dir))
    tasks = ms.relax_integration.extract_tasks(mod, target)
    pending = [t for t in tasks if database.query_tuning_record(t.dispatched[0], target, "main") is None]
    pending.sort(key=lambda t: -t.weight * _flops(t.dispatched[0]))
    per_kernel = max(MIN_TRIALS_PER_KERNEL, options.trials // max(1, len(pending)))
    chosen = pending[: options.trials // per_kernel]
    report = {"kernels": len(tasks), "reused": len(tasks) - len(pending), "tuned": len(chosen),
              "untuned": len(pending) - len(chosen), "trials": per_kernel * len(chosen)}
    if not chosen:
        return report
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        chosen, work_dir=str(options.work_dir), seed=0)
    callbacks = list(ms.measure_callback.MeasureCallback.create("default"))
    if progress:
        callbacks.append(_ProgressCallback(progress, report["trials"]))
    ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(options.work_dir),
                       max_trials_global=report["trials"], max_trials_per_task=per_kernel,
                       num_trials_per_iter=min(64, per_kernel), database=database, measure_callbacks=callbacks,
                       builder=ms.builder.LocalBuilder(f_build=build_candidate, timeout_sec=120))
    return report


def _flops(prim_mod: tvm.IRModule) -> float:
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(prim_mod))
    except Exception:  # kernels the estimator does not understand rank last
        return 0.0


def _progress_callback_class():
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
    from tvm.ir.utils import derived_object

    @derived_object
    class ProgressCallback(PyMeasureCallback):
        """Reports measured trials to a progress function after every batch."""

        def __init__(self, report: Progress, total: int):
            self.report, self.total, self.done = report, total, 0

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
            self.done += len(measure_candidates)
            name = task_scheduler.tasks_[task_id].ctx.task_name
            self.report(f"tuning {name}", min(self.done, self.total), self.total)

    return ProgressCallback


def _ProgressCallback(report: Progress, total: int):  # noqa: N802  (constructs the derived class lazily)
    return _progress_callback_class()(report, total)


def build_candidate(mod: tvm.IRModule, target: Target, _params: Any = None) -> Any:
    """MetaSchedule's default builder, minus the 68 s import of every target's tensor intrinsics."""
    import_cpu_intrinsics()
    from tvm.driver import build as tir_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tir_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)
