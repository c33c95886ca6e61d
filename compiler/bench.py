"""Latency of a compiled model against its peers, all measured in the same process and run.

Each engine runs the same inputs: ``warmup`` calls, then ``repeat`` timed calls (wall clock around one
inference, outputs left on the engine's side), taken in ``rounds`` interleaved rounds (every engine's first
round, then every engine's second, ..., each after a pause that lets the previous engine's threads go
idle), so that every engine samples the same states of a shared machine: on these 2-vCPU guests the host at
times runs both vCPUs on one physical core for seconds to minutes (the 2-thread arithmetic peak then equals
the 1-thread one, and a compute-bound model slows by up to 1.8x), and engines timed one after the other
would see different machines. We report the median and the 90th percentile over all of an engine's calls
and the ratio of every engine's median to ours (> 1 means we are faster).
Peers: onnxruntime fp32 (on the source ONNX file, or a ``torch.onnx.export(dynamo=True)`` of a torch
source), onnxruntime int8 (its own static quantization, given calibration samples), PyTorch eager for torch
sources, and our own float compile.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .errors import CompilerError
from .executable import CompiledModel
from .sources import Source


@dataclass(frozen=True)
class Row:
    """One engine's latency on one model."""

    model: str
    engine: str
    precision: str
    median_ms: float
    p90_ms: float
    runs: int
    ratio_vs_qc: float | None = None  # peer median / our median: > 1 means qc is faster

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def time_calls(fn: Callable[[], Any], warmup: int, repeat: int) -> np.ndarray:
    """Milliseconds of ``repeat`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = np.empty(repeat)
    for i in range(repeat):
        start = time.perf_counter()
        fn()
        times[i] = (time.perf_counter() - start) * 1e3
    return times


def median_ms(fn: Callable[[], Any], repeat: int = 20, warmup: int = 3, seconds: float = 0.3) -> float:
    """Median milliseconds of ``fn`` over at least ``repeat`` calls, more for a fast ``fn``: enough calls to
    fill about ``seconds`` (at most 2,000), so that microsecond kernels are not at the mercy of one hiccup."""
    once = time_calls(fn, warmup, 3).min() / 1e3
    runs = int(min(2000, max(repeat, seconds / max(once, 1e-6))))
    return float(np.median(time_calls(fn, 0, runs)))


def sample_inputs(compiled: CompiledModel, source: Source | None, seed: int = 0) -> dict[str, np.ndarray]:
    """The torch source's example inputs when there are some, else seeded random inputs of the right shape."""
    if source is not None and source.is_torch:
        return {s.name: np.asarray(t.detach().numpy()) for s, t in zip(compiled.inputs, source.example_inputs)}
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in compiled.inputs:
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            inputs[spec.name] = rng.integers(0, 2, spec.shape).astype(spec.dtype)
        else:
            inputs[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
    return inputs


QC = "qc (TVM)"

SETTLE_SECONDS = 0.3
"""Pause before each engine's round: an idle thread pool keeps spinning on the cores for a while after its last
call (TVM's workers about 0.19 s after a ResNet-18 call here, by their CPU time), and an engine timed during
another's spin shares its cores with it (onnxruntime int8 on ResNet-18 read 21.6 ms right after qc's rounds,
against about 6 ms alone). Each round also starts with one untimed call."""


def interleaved_times(runs: Sequence[Callable[[], Any]], repeat: int, rounds: int) -> list[np.ndarray]:
    """Milliseconds of ``repeat`` calls of each of ``runs``, taken in ``rounds`` rounds that interleave them
    (each round: every run in turn, one untimed call first, after ``SETTLE_SECONDS``), so that every run
    samples the same states of a shared machine."""
    times: list[list[np.ndarray]] = [[] for _ in runs]
    for calls in np.array_split(np.arange(repeat), min(rounds, repeat)):
        for index, run in enumerate(runs):
            time.sleep(SETTLE_SECONDS)  # the previous run's idle threads stop spinning
            times[index].append(time_calls(run, 1, len(calls)))
    return [np.concatenate(t) for t in times]


def bench(compiled: CompiledModel, source: Source | None = None, *, model_name: str = "model", warmup: int = 5,
          repeat: int = 30, threads: int = 2, peers: bool = True, float_model: CompiledModel | None = None,
          calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
          on_engine: Callable[[str], None] | None = None, variants: Sequence[CompiledModel] = (),
          rounds: int = 5) -> list[Row]:
    """Time ``compiled`` and (with ``peers``) onnxruntime fp32 and PyTorch eager on the same inputs; with
    ``float_model``, our float compile of the same model too, and each of ``variants`` (other compiles of it,
    e.g. W4A8 beside W8A8); with ``calibration``, onnxruntime int8
    (``quantize_static``: QDQ, per-channel, uint8 activations x int8 weights, calibrated on those samples).
    Every engine gets ``threads`` threads, qc's own TVM thread pool included (restored afterwards); the
    ``repeat`` timed calls of each engine come in ``rounds`` rounds interleaved with the other engines'."""
    if repeat < 1 or rounds < 1:
        raise CompilerError(f"repeat and rounds must be >= 1, got repeat={repeat}, rounds={rounds}")
    with qc_threads(threads), tempfile.TemporaryDirectory() as tmp:
        inputs = sample_inputs(compiled, source)
        engines: list[tuple[str, str, Callable[[], Any]]] = [(QC, precision(compiled.manifest),
                                                              _qc_runner(compiled, inputs))]
        for other in ([float_model] if float_model is not None else []) + list(variants):
            engines.append((QC, precision(other.manifest), _qc_runner(other, inputs)))
        if peers and source is not None:
            onnx_path = source.onnx_path or _export(source, Path(tmp) / "model.onnx")
            engines.append(("onnxruntime", "fp32", _ort_runner(onnx_path, inputs, threads)))
            if calibration is not None:
                int8_path = ort_quantize_static(onnx_path, calibration, Path(tmp) / "int8.onnx")
                engines.append(("onnxruntime", "int8 qdq", _ort_runner(int8_path, inputs, threads)))
            if source.is_torch:
                engines.append(("pytorch eager", "fp32", _torch_runner(source, inputs, threads)))
        for name, kind, run in engines:
            if on_engine:
                on_engine(f"{name} {kind}")
            time_calls(run, warmup, 0)
        samples = interleaved_times([run for _, _, run in engines], repeat, rounds)
        results = [(name, kind, float(np.median(s)), float(np.percentile(s, 90)))
                   for (name, kind, _), s in zip(engines, samples)]
    ours = results[0][2]
    return [Row(model_name, name, kind, round(median, 4), round(p90, 4), repeat,
                None if i == 0 else round(median / ours, 3)) for i, (name, kind, median, p90) in enumerate(results)]


@contextlib.contextmanager
def qc_threads(count: int) -> Iterator[None]:
    """TVM's runtime thread pool resized to ``count`` threads for the ``with`` block, then restored."""
    import tvm

    if count < 1:
        raise CompilerError(f"threads must be >= 1, got {count}")
    configure = tvm.get_global_func("runtime.config_threadpool")  # (1: all cores, no big.LITTLE here; count)
    previous = int(tvm.get_global_func("runtime.NumThreads")())
    if count != previous:
        configure(1, count)
    try:
        yield
    finally:
        if count != previous:
            configure(1, previous)


def ort_quantize_static(float_path: Path, calibration: Sequence[Mapping[str, np.ndarray]], path: Path,
                        method: str = "minmax") -> Path:
    """onnxruntime's static quantization of ``float_path``: QDQ, per-channel, U8S8, on ``calibration``, with
    its calibration ``method`` (``minmax``, ``entropy``, ``percentile``, ``distribution``)."""
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile, "distribution": CalibrationMethod.Distribution}
    if method not in methods:
        raise ValueError(f"unknown onnxruntime calibration method {method!r}; choose one of {', '.join(methods)}")

    names = [i.name for i in ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"]).get_inputs()]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter([dict(zip(names, sample.values())) for sample in calibration])

        def get_next(self):
            return next(self.samples, None)

    with contextlib.redirect_stdout(sys.stderr):
        quantize_static(str(float_path), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=methods[method])
    return path


def precision(manifest: dict) -> str:
    """``fp32``, or the quantization scheme of a compiled model (``int w8a8``; ``int mixed`` when layers differ)."""
    quantization = manifest.get("quantization")
    if not quantization:
        return "fp32"
    widths = {(spec["weight_bits"], spec["activation_bits"]) for spec in quantization["layers"].values()}
    if len(widths) != 1:
        return "int mixed"
    (weight_bits, activation_bits), = widths
    return f"int w{weight_bits}a{activation_bits}"


def _qc_runner(compiled: CompiledModel, inputs: dict[str, np.ndarray]) -> Callable[[], Any]:
    arrays = compiled.prepare(inputs)
    return lambda: compiled.call(arrays)


def _ort_runner(path: Path, inputs: dict[str, np.ndarray], threads: int) -> Callable[[], Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feed = dict(zip(names, inputs.values())) if set(names) != set(inputs) else inputs
    return lambda: session.run(None, feed)


def _torch_runner(source: Source, inputs: dict[str, np.ndarray], threads: int) -> Callable[[], Any]:
    import torch

    torch.set_num_threads(threads)
    module = source.module.eval()
    args = [torch.from_numpy(a) for a in inputs.values()]

    def run() -> Any:
        with torch.inference_mode():
            return module(*args)

    return run


def _export(source: Source, path: Path) -> Path:
    """The torch source as one ONNX file, through the same exporter the tests use (dynamo=True)."""
    import models

    names = tuple(source.input_names or [f"input_{i}" for i in range(len(source.example_inputs))])
    case = models.ModelCase(source.spec, source.module.eval(), tuple(source.example_inputs), names, "")
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout clean for --json
        return models.export_onnx(case, path)
