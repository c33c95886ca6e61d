"""The public API: ``compile`` a model into a ``CompiledModel``; ``load`` an artifact back.

    import compiler
    model = compiler.compile("model.onnx", shapes={"input": (1, 3, 224, 224)})
    model.save("out/")                       # model.so + manifest.json
    outputs = compiler.load("out/").run({"input": x})
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import backends
import frontends
from frontends import ImportedModel
from passes.check_integer_only import declared_islands, island_reasons

from .build import build
from .errors import CompilerError
from .executable import CompiledModel
from .pipeline import Pipeline
from .profile import kernel_info
from .progress import progress as progress_bar
from .quantization.quantize import lower
from .sources import Source


def import_model(model: Any, *, example_inputs: Sequence[Any] | None = None,
                 input_names: Sequence[str] | None = None,
                 shapes: Mapping[str, Sequence[int]] | None = None) -> ImportedModel:
    """Import an ONNX path / ModelProto, or a torch module with example inputs, into a float Relax module."""
    if isinstance(model, ImportedModel):
        return model
    if isinstance(model, Source):
        if model.onnx_path is not None:
            return frontends.from_onnx(model.onnx_path, shapes)
        return frontends.from_torch(model.module, model.example_inputs, model.input_names, model.description)
    if isinstance(model, (str, os.PathLike)):
        return frontends.from_onnx(model, shapes)
    if type(model).__name__ == "ModelProto":
        return frontends.from_onnx(model, shapes)
    if example_inputs is None:
        raise CompilerError(f"cannot compile a {type(model).__name__}: pass an ONNX path or ModelProto, "
                            "or a torch.nn.Module together with example_inputs")
    return frontends.from_torch(model, example_inputs, input_names)


def compile(model: Any, *, example_inputs: Sequence[Any] | None = None,
            input_names: Sequence[str] | None = None, shapes: Mapping[str, Sequence[int]] | None = None,
            target: Any = None, passes: Any = None, tune_trials: int = 0, work_dir: str | Path | None = None,
            quantize: Any = None, calibration: Any = None, bits: str | None = None,
            max_size: float | None = None, max_bops: float | None = None, max_latency: float | None = None,
            integer_only: str = "islands", verify: bool = False, progress: bool = False,
            oracle: bool = False, latency_model: str | Path = "auto",
            layer_precision: str = "int8") -> CompiledModel:
    """Compile ``model`` for ``target`` (default: this CPU) through the pipeline ``passes``.

    ``passes`` is ``None`` (the default pipeline), a list of pass names, a ``Pipeline``, or a TOML spec path.
    ``tune_trials`` > 0 tunes kernels with MetaSchedule, keeping the database in ``work_dir`` for reuse;
    ``work_dir`` alone (no trials) applies an existing database. ``verify`` checks well-formedness after
    every pass. ``progress`` shows a progress line on stderr. ``integer_only="strict"`` makes any float
    island of a quantized model an error (default ``"islands"``: declared islands, listed with their reason
    in the manifest, are allowed).
    ``quantize`` (a scheme ``w8a8``/``w4a8``/``w4a4`` or a ``QuantPolicy``) calibrates on ``calibration`` (an
    iterable of {input name: array} samples, or an .npz path with the samples stacked on a leading axis) and
    inserts quantize/dequantize pairs, then ``QUANTIZED_PASSES`` lower the model to integer arithmetic.
    ``bits="auto"`` chooses 4 or 8 weight bits per layer by ILP (``compiler.quantization.bit_allocation``) under
    ``max_size`` (weight bytes), ``max_bops`` and/or ``max_latency`` (milliseconds; each layer's kernels are
    measured at 4 and 8 bits on this target first, cached, see ``compiler.quantization.layer_latency``), from
    sensitivities measured on the calibration samples; ``quantize`` then gives the observer and activation
    bits (default W8A8 minmax). ``latency_model`` says where a latency budget's per-layer times come from:
    ``"auto"`` (the default) predicts them with the cost model shipped for this CPU when it was trained on
    these kernel templates (``compiler.costmodel.for_target``) and measures otherwise, ``"measure"`` always
    measures, a path names a cost model file (an error if it does not apply).
    ``layer_precision="auto"`` (quantized models) keeps in float each layer whose integer kernel, with the
    conversions around a float island, is slower than its float kernel: predicted by the same cost model, or
    measured (``latency_model="measure"``: both builds compiled and their layer kernels timed, and the model
    with those layers in float kept only if it runs faster than the all-int8 one, alternating the two);
    ``compiler.costmodel.decide``. The default ``"int8"`` quantizes every layer the policy names.
    ``oracle`` (quantized models) runs the per-op differential oracle (``compiler.quantization.oracle``) on
    the first ``ORACLE_SAMPLES`` calibration samples: the built integer executable against the QDQ float
    simulation, op by op within a derived bound and end to end; it raises ``OracleError`` when the lowering
    leaves its bound and records a summary in the manifest under ``quantization.oracle``.
    """
    if oracle and quantize is None and bits is None:
        raise CompilerError("the oracle checks a quantized model: give a quantization scheme (--quantize / quantize=)")
    if calibration is not None and quantize is None:
        raise CompilerError("calibration samples were given without a quantization scheme (--quantize / quantize=)")
    tvm_target = backends.parse_target(target)
    pipeline = Pipeline.from_spec(passes, tvm_target)
    elsewhere = backends.why_not_here(tvm_target)  # a cross compile: nothing may run the target's code here
    if elsewhere and (oracle or max_latency is not None):
        raise CompilerError(f"{'the oracle' if oracle else 'a latency budget'} runs the compiled code on this "
                            f"machine, and {elsewhere}")
    host = None if elsewhere else tvm_target  # calibration and sensitivities run float code here
    tuning = None
    if tune_trials or work_dir is not None:
        if work_dir is None:
            raise CompilerError("tuning needs a work directory (work_dir=...) to keep its database in")
        tuning = backends.TuningOptions(int(tune_trials), Path(work_dir))
    started = time.perf_counter()
    with progress_bar(progress) as bar:
        bar.stage("importing")
        imported = import_model(model, example_inputs=example_inputs, input_names=input_names, shapes=shapes)
        quantization, mod, records = None, imported.mod, []
        allocation = None
        if bits is not None:
            bar.stage("allocating bits")
            quantize, calibration, allocation = _allocated(imported, quantize, calibration, bits,
                                                           Budgets(max_size, max_bops, max_latency),
                                                           host, work_dir, bar, latency_model)
        if layer_precision not in ("int8", "auto"):
            raise CompilerError(f"layer_precision={layer_precision!r}: choose 'int8' or 'auto'")
        precision = None
        if layer_precision == "auto":
            if quantize is None:
                raise CompilerError("layer_precision='auto' decides int8 or float per layer of a quantized model: "
                                    "give a quantization scheme (--quantize / quantize=)")
            bar.stage("deciding int8 or float per layer")
            calibration = list(_samples(imported, calibration))
            quantize, precision = _precision(imported, quantize, calibration, host, latency_model, work_dir)
        if quantize is not None:
            bar.stage("calibrating")
            if oracle:  # read twice: calibration, then the oracle
                calibration = list(_samples(imported, calibration))
            quantized = _quantized(imported, quantize, calibration, host)
            imported = quantized.imported
            mod, records = lower(quantized, verify=verify, strict=_strict(integer_only))
            quantization = {"mode": "integer", **quantized.info, "float_islands": declared_islands(mod),
                            "float_island_reasons": island_reasons(mod),
                            "bit_allocation": allocation, "layer_precision": precision}
        built = build(mod, tvm_target, pipeline=pipeline, tuning=tuning, verify=verify, on_stage=bar.stage)
        if oracle and quantization is not None:
            bar.stage("running the oracle")
            quantization["oracle"] = _oracle(quantized, mod, built, calibration, tvm_target, pipeline, tuning)
        records += built.records
        library, tuned, mod = built.library, built.tuned, built.mod
    manifest = {
        "inputs": [t.to_json() for t in imported.inputs],
        "outputs": [t.to_json() for t in imported.outputs],
        "target": json.loads(str(tvm_target)),
        "pipeline": [{"pass": r.name, "seconds": round(r.seconds, 4), "functions": r.functions} for r in records],
        "kernels": sum(1 for gv in mod.functions if type(mod[gv]).__name__ == "PrimFunc"),
        "kernels_before_fusion": _kernels_before_fusion(records),
        "kernel_info": kernel_info(mod),  # per kernel: operations, arguments, integer or not (``qc profile``)
        "tuning": {"budget": tuning.trials, "work_dir": str(tuning.work_dir.resolve()), **tuned} if tuning else None,
        "source": imported.source,
        "quantization": quantization,
        "compile_seconds": round(time.perf_counter() - started, 3),
        "versions": _versions(),
    }
    return CompiledModel(library, manifest, target=tvm_target)


@dataclass(frozen=True)
class Budgets:
    """What ``bits="auto"`` must fit: weight bytes, BOPs, milliseconds (None: unconstrained)."""

    max_size: float | None = None
    max_bops: float | None = None
    max_latency: float | None = None


def _allocated(imported: ImportedModel, quantize: Any, calibration: Any, bits: str, budgets: Budgets,
               target: Any, work_dir: str | Path | None, bar, latency_model: str | Path = "auto"):
    """The policy the ILP chooses, the calibration samples as a list (read twice) and what the manifest says."""
    from passes.quant_policy import QuantPolicy

    from .quantization.bit_allocation import allocate, layer_costs, measured_sensitivity
    from .quantization.calibration import samples_from_npz
    from .quantization.layer_latency import measure_layer_latency, predict_layer_latency

    if bits != "auto":
        raise CompilerError(f"bits={bits!r}: only 'auto' (ILP allocation) is supported")
    if budgets == Budgets():
        raise CompilerError("bits='auto' needs a budget: max_size (bytes of weights), max_bops and/or "
                            "max_latency (ms)")
    if calibration is None:
        raise CompilerError("bits='auto' needs calibration samples (calibration=... / --calib CALIB.npz)")
    if isinstance(calibration, (str, os.PathLike)):
        calibration = samples_from_npz(calibration, imported.inputs)
    samples = list(calibration)
    base = quantize if isinstance(quantize, QuantPolicy) else QuantPolicy.from_scheme(quantize or "w8a8")
    if base.default.weight_group is not None or any(s.weight_group for s in base.overrides.values()):
        raise CompilerError("bits='auto' chooses per-channel 4 or 8 bits; it does not take group-wise weights "
                            "(--group-size / weight_group)")
    started = time.perf_counter()
    sensitivity = measured_sensitivity(imported, samples[:8])
    sensitivity_seconds = time.perf_counter() - started
    latency, latency_source = None, None
    if budgets.max_latency is not None:
        model, latency_source = _latency_model(latency_model, target, work_dir)
        if model is not None:
            bar.stage("predicting layer latency at 4 and 8 bits")
            latency = predict_layer_latency(imported, model, activation_bits=base.default.activation_bits)
        else:
            bar.stage("measuring layer latency at 4 and 8 bits")
            latency = measure_layer_latency(imported, samples, activation_bits=base.default.activation_bits,
                                            target=target, work_dir=work_dir)
    choice = allocate(sensitivity, layer_costs(imported), max_size_bytes=budgets.max_size,
                      max_bops=budgets.max_bops, max_latency_ms=budgets.max_latency, latency=latency,
                      activation_bits=base.default.activation_bits)
    policy = choice.policy(base.default.observer)
    record = {"weight_bits": choice.bits, **asdict(budgets), "size_bytes": choice.size_bytes, "bops": choice.bops,
              "predicted_latency_ms": choice.latency_ms,
              "latency_source": latency_source,
              "latency_measurement": None if latency is None else {
                  "cached": latency.cached, "seconds": round(latency.seconds, 2),
                  "overhead_ms": round(latency.overhead_ms, 4),
                  "uniform_ms": {f"w{b}": round(v, 4) for b, v in latency.uniform_ms.items()}},
              "sensitivity_seconds": round(sensitivity_seconds, 3), "solve_seconds": round(choice.solve_seconds, 4)}
    return policy, samples, record


def _latency_model(choice: str | Path, target: Any, work_dir: str | Path | None):
    """(the cost model to predict layer latency with, or None to measure; what the manifest says about it)."""
    from .costmodel.model import for_target

    if choice == "measure":
        return None, "measured (latency_model='measure')"
    if work_dir is not None and choice == "auto":  # tuned kernels: the shipped model learned untuned ones
        return None, "measured (a tuning database applies; the cost model knows untuned kernels)"
    model, why = for_target(target, None if choice == "auto" else choice)
    if model is None and choice != "auto":
        raise CompilerError(f"latency_model={str(choice)!r} does not apply: {why}")
    return model, why if model is not None else f"measured ({why})"


def _precision(imported: ImportedModel, quantize: Any, samples: list, target: Any, latency_model: str | Path,
               work_dir: str | Path | None):
    """The policy with a float override on each layer ``costmodel.decide`` keeps in float, and the record."""
    from passes.quant_policy import QuantPolicy

    from .costmodel.decide import Decision, precision_by_layer
    from .quantization.calibration import prepare
    from .quantization.layer_latency import layer_kernel_times
    from .quantization.quantize import compile_float, compile_quantized

    policy = quantize if isinstance(quantize, QuantPolicy) else QuantPolicy.from_scheme(quantize)
    model, source = _latency_model(latency_model, target, work_dir)
    if model is not None:
        decisions = precision_by_layer(prepare(imported), model, weight_bits=policy.default.weight_bits,
                                       activation_bits=policy.default.activation_bits)
    else:  # measured: both builds' layer kernels, timed alone; the islands are priced by the whole-model check
        built = [compile_quantized(imported, samples[:1], policy, target, work_dir),
                 compile_float(imported, target, work_dir)]
        integer, floating = (layer_kernel_times(m, m.prepare(samples[0]), 5, 30) for m in built)
        decisions = {name: Decision(integer[name], floating[name], 0.0) for name in integer if name in floating}
    kept = sorted(name for name, d in decisions.items() if d.float)
    mixed = policy
    for name in kept:
        mixed = mixed.with_override(name, quantize=False)
    record = {"source": source, "float_layers": kept,
              "per_layer_ms": {name: [round(d.integer_ms, 5), round(d.float_ms, 5), round(d.glue_ms, 5)]
                               for name, d in decisions.items()}}
    if kept and model is None:  # measured: keep the islands only if the whole model is faster with them
        candidate = compile_quantized(imported, samples[:1], mixed, target, work_dir)
        whole = _alternating_ms([built[0], candidate], samples[0])
        record["whole_ms"] = {"int8": round(whole[0], 4), "with_float_layers": round(whole[1], 4)}
        if whole[1] >= whole[0]:
            record["float_layers"], record["rejected_float_layers"], mixed = [], kept, policy
    return mixed, record


def _alternating_ms(models: list, sample, repeat: int = 40, rounds: int = 10) -> list[float]:
    """Median ms of each model's inference, the models' runs interleaved in ``rounds`` rounds (a shared host
    drifts; ``bench.interleaved_times``)."""
    import numpy as np

    from .bench import interleaved_times, time_calls

    runs = [(lambda m=m, a=m.prepare(sample): m.call(a)) for m in models]
    for run in runs:
        time_calls(run, 3, 0)  # warm-up
    return [float(np.median(t)) for t in interleaved_times(runs, repeat, rounds)]


def _quantized(imported: ImportedModel, policy: Any, calibration: Any, target: Any):
    from .quantization.quantize import quantize

    return quantize(imported, _samples(imported, calibration), policy, target)


def _strict(integer_only: str) -> bool:
    if integer_only not in ("islands", "strict"):
        raise CompilerError(f"integer_only={integer_only!r}: expected 'islands' (declared float islands allowed) "
                            "or 'strict' (none)")
    return integer_only == "strict"


ORACLE_SAMPLES = 4
"""Calibration samples the oracle of ``compile(..., oracle=True)`` runs on."""


def _samples(imported: ImportedModel, calibration: Any):
    """The calibration samples as an iterable (streamed: an .npz is read sample by sample)."""
    from .quantization.calibration import samples_from_npz

    if calibration is None:
        raise CompilerError("quantization needs calibration samples (calibration=... / --calib CALIB.npz)")
    if isinstance(calibration, (str, os.PathLike)):
        return samples_from_npz(calibration, imported.inputs)
    return calibration


def _oracle(quantized, lowered, built, samples, target, pipeline, tuning) -> dict:
    """The oracle on the first calibration samples; ``OracleError`` when it fails, else its manifest summary."""
    from .quantization.oracle import check, run_oracle

    report = run_oracle(quantized, lowered, built, list(samples)[:ORACLE_SAMPLES], target, pipeline=pipeline,
                        tuning=tuning)
    return check(report).manifest()


def _kernels_before_fusion(records) -> int | None:
    """The TIR functions right after legalization (all functions then, minus main), if it ran."""
    legalized = [r for r in records if r.name == "legalize_ops"]
    return legalized[-1].functions - 1 if legalized else None


def _versions() -> dict[str, str]:
    from .artifact import package_versions

    return package_versions()
