"""Run fuzz graphs through the compiler: float against PyTorch, W8A8 and W4A8 through the per-op oracle.

    report = run(range(100, 130), time_budget_s=240)   # stops starting graphs when the budget would be passed
    print(report.format())                             # graphs, failures, per-op / per-override coverage
    result = run_graph(generate(7))                    # one graph

For each graph (``tests.fuzz.graphs``):

1. PyTorch runs it on a held-out input (a failure here is the generator's: kind ``generator``);
2. ``compiler.import_model`` and ``compiler.compile`` in float: the output must match PyTorch's to
   max |ours - ref| / max |ref| <= 1e-4 (kind ``float``);
3. for W8A8 and W4A8, with the graph's per-layer overrides (``quantize=False`` or the other weight width):
   calibration on 8 seeded random inputs, ``quantize`` / ``lower`` / ``build``, then
   ``compiler.quantization.oracle.run_oracle`` on held-out evaluation inputs (not the calibration ones): every
   op within its bound of the QDQ simulation, end to end SQNR / cosine above the floors (kind ``oracle``).

Any exception from a graph built only from the listed ops is a failure of kind ``compile`` (stage says
where). The layer names the generator gave its overrides are checked against
``passes.quant_plan.quantizable_layers`` of the prepared module (a mismatch is a ``generator`` failure).
With ``out_dir``, each failing graph leaves a reproducer there: ``seed_N/model.onnx`` (dynamo export, or
``model.pt`` from ``torch.save`` when the export fails), ``seed_N/graph.txt`` (the graph, the failures and the
command line that reruns the seed).
"""

from __future__ import annotations

import collections
import contextlib
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from .graphs import OP_TAGS, OVERRIDE_TAGS, PATTERN_TAGS, Graph, generate, random_inputs

STAGES = ("float", "w8a8", "w4a8")
FLOAT_TOLERANCE = 1e-4
CALIBRATION_SAMPLES = 8
EVALUATION_SAMPLES = 2
INPUT_NAME = "input"


@dataclass
class Failure:
    seed: int
    kind: str  # generator | compile | float | oracle
    stage: str  # torch | import | layers | float | w8a8 | w4a8
    message: str
    tags: list[str] = field(default_factory=list)
    command: str = ""
    reproducer: str | None = None

    def __str__(self) -> str:
        text = f"seed {self.seed} [{self.kind} @ {self.stage}] {self.message}"
        return text + (f"\n    rerun: {self.command}" if self.command else "") + (
            f"\n    reproducer: {self.reproducer}" if self.reproducer else "")


@dataclass
class GraphResult:
    seed: int
    tags: list[str]
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)  # float error, oracle verdict lines

    @property
    def ok(self) -> bool:
        return not self.failures


@contextlib.contextmanager
def mutations(names: Iterable[str] | None) -> Iterator[None]:
    """``passes.lower_integer.MUTATIONS`` set to ``names`` for the block, always restored."""
    from passes import lower_integer

    saved = lower_integer.MUTATIONS
    lower_integer.MUTATIONS = set(names or ())
    try:
        yield
    finally:
        lower_integer.MUTATIONS = saved


def policy_for(graph: Graph, scheme: str):
    """``QuantPolicy.from_scheme(scheme)`` with the graph's overrides: ``float`` keeps the layer in float,
    ``bits`` gives it the other weight width (4 under an 8-bit scheme, 8 under a 4-bit one)."""
    from passes.quant_policy import QuantPolicy

    policy = QuantPolicy.from_scheme(scheme)
    for layer, kind in graph.overrides.items():
        if kind == "float":
            policy = policy.with_override(layer, quantize=False)
        else:
            policy = policy.with_override(layer, weight_bits=4 if policy.default.weight_bits == 8 else 8)
    return policy


def command_for(seed: int, mutation: Iterable[str] | None = None, stages: Iterable[str] = STAGES) -> str:
    cmd = f".venv/bin/python benchmarks/fuzz.py --seed {seed} --graphs 1"
    if tuple(stages) != STAGES:
        cmd += f" --stages {','.join(stages)}"
    for name in sorted(mutation or ()):
        cmd += f" --mutation {name}"
    return cmd


def _error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    text = f"{type(exc).__name__}: {exc}".strip()
    if len(text) > 1500:
        text = text[:1500] + " ..."
    return text + where


def run_graph(graph: Graph | int, stages: Iterable[str] = STAGES, out_dir: str | Path | None = None,
              mutation: Iterable[str] | None = None, target: str | dict | None = None) -> GraphResult:
    """Run one graph (or seed) through ``stages`` (``float``, ``w8a8``, ``w4a8``); failures are collected,
    never raised. ``target`` (default: this CPU) is what the quantized models are built for, e.g. another x86
    CPU this one can run (``{"kind": "llvm", "mcpu": "haswell"}``: the kernels of a CPU without VNNI)."""
    import compiler
    from backends import parse_target
    from compiler.build import build
    from compiler.quantization.calibration import prepare
    from compiler.quantization.oracle import run_oracle
    from compiler.quantization.quantize import lower, quantize
    from passes.quant_plan import quantizable_layers

    graph = generate(graph) if isinstance(graph, int) else graph
    stages = tuple(stages)
    started = time.perf_counter()
    result = GraphResult(graph.seed, graph.tags, 0.0)
    command = command_for(graph.seed, mutation, stages)

    def fail(kind: str, stage: str, message: str) -> None:
        result.failures.append(Failure(graph.seed, kind, stage, message, graph.tags, command))

    def timed(stage: str, t0: float) -> None:
        result.stage_seconds[stage] = round(time.perf_counter() - t0, 2)

    with mutations(mutation):
        evaluation = random_inputs(graph, EVALUATION_SAMPLES, stream=99)
        x = torch.from_numpy(evaluation[0])
        t0 = time.perf_counter()
        try:
            module = graph.module()
            with torch.no_grad():
                expected = module(x).numpy()
        except Exception as exc:  # noqa: BLE001 - the generator built something PyTorch rejects
            fail("generator", "torch", _error(exc))
            return _finish(result, started, graph, out_dir)
        try:
            imported = compiler.import_model(module, example_inputs=(x,), input_names=[INPUT_NAME])
        except Exception as exc:  # noqa: BLE001
            fail("compile", "import", _error(exc))
            return _finish(result, started, graph, out_dir)
        timed("import", t0)

        if "float" in stages:
            t0 = time.perf_counter()
            try:
                model = compiler.compile(imported)
                actual = next(iter(model.run({INPUT_NAME: evaluation[0]}).values()))
                err = float(np.abs(actual - expected).max() / max(float(np.abs(expected).max()), 1e-12))
                result.details["float"] = f"max rel err {err:.2e}"
                if actual.shape != expected.shape or not err <= FLOAT_TOLERANCE:
                    fail("float", "float", f"max |ours - ref| / max |ref| = {err:.3e} > {FLOAT_TOLERANCE:g} "
                                           f"(shapes {list(actual.shape)} / {list(expected.shape)})")
            except Exception as exc:  # noqa: BLE001
                fail("compile", "float", _error(exc))
            timed("float", t0)

        schemes = [s for s in stages if s != "float"]
        if schemes:
            try:
                names = [name for name, _ in quantizable_layers(prepare(imported)["main"])]
                if names != graph.layers:
                    fail("generator", "layers", f"generator layer names {graph.layers} != the compiler's {names}")
                    schemes = []
            except Exception as exc:  # noqa: BLE001
                fail("compile", "layers", _error(exc))
                schemes = []
        calibration = [{INPUT_NAME: a} for a in random_inputs(graph, CALIBRATION_SAMPLES, stream=1)]
        held_out = [{INPUT_NAME: a} for a in evaluation]
        for scheme in schemes:
            t0 = time.perf_counter()
            try:
                laps = [time.perf_counter()]
                quantized = quantize(imported, calibration, policy_for(graph, scheme))
                laps.append(time.perf_counter())
                lowered, _ = lower(quantized)
                laps.append(time.perf_counter())
                production = build(lowered, None if target is None else parse_target(target))
                laps.append(time.perf_counter())
                report = run_oracle(quantized, lowered, production, held_out,
                                    None if target is None else parse_target(target))
                laps.append(time.perf_counter())
                verdict = report.summary().splitlines()
                split = ", ".join(f"{name} {b - a:.1f}s" for name, a, b in
                                  zip(("quantize", "lower", "build", "oracle"), laps, laps[1:]))
                result.details[scheme] = f"{verdict[0]} | {verdict[1]} | {split}"
                if not report.ok:
                    if report.first_failure is not None:
                        message = f"first op out of bound: {report.first_failure}"
                    elif report.unpaired:
                        message = f"QDQ anchors not mapped by the lowering: {', '.join(report.unpaired)}"
                    else:
                        message = verdict[1]
                    fail("oracle", scheme, f"{message} [{verdict[0]}]")
            except Exception as exc:  # noqa: BLE001
                fail("compile", scheme, _error(exc))
            timed(scheme, t0)
    return _finish(result, started, graph, out_dir)


def _finish(result: GraphResult, started: float, graph: Graph, out_dir) -> GraphResult:
    result.seconds = round(time.perf_counter() - started, 2)
    if result.failures and out_dir is not None:
        path = save_reproducer(graph, result, Path(out_dir))
        for failure in result.failures:
            failure.reproducer = str(path)
    return result


def save_reproducer(graph: Graph, result: GraphResult, out_dir: Path) -> Path:
    """``out_dir/seed_N/``: the model as ONNX (or a torch.save file), the graph, failures and rerun command."""
    import models

    folder = out_dir / f"seed_{graph.seed}"
    folder.mkdir(parents=True, exist_ok=True)
    module = graph.module()
    x = graph.example_input()
    try:
        case = models.ModelCase(f"fuzz-{graph.seed}", module, (x,), (INPUT_NAME,), f"fuzz graph {graph.seed}")
        model = models.export_onnx(case, folder / "model.onnx")
    except Exception as exc:  # noqa: BLE001 - fall back to the pickled module
        model = folder / "model.pt"
        torch.save(module, model)
        (folder / "export_error.txt").write_text(_error(exc) + "\n")
    lines = [graph.describe(), "", f"model: {model.name}  (input '{INPUT_NAME}' {list(graph.input_shape)})",
             f"rerun: {result.failures[0].command}", "", "failures:"]
    lines += [f"  [{f.kind} @ {f.stage}] {f.message}" for f in result.failures]
    (folder / "graph.txt").write_text("\n".join(lines) + "\n")
    return folder


@dataclass
class Report:
    results: list[GraphResult]
    seconds: float
    budget_s: float | None
    planned: int
    stages: tuple[str, ...] = STAGES
    mutation: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Failure]:
        return [f for r in self.results for f in r.failures]

    def coverage(self) -> dict[str, int]:
        """How many graphs used each tag (every listed op, pattern and override kind, zero counts too)."""
        counts = collections.Counter(t for r in self.results for t in r.tags)
        return {tag: counts.get(tag, 0) for tag in (*OP_TAGS, *PATTERN_TAGS, *OVERRIDE_TAGS)}

    def under_covered(self, share: float = 0.05) -> list[str]:
        n = max(len(self.results), 1)
        return [tag for tag, count in self.coverage().items() if tag in OP_TAGS and count / n < share]

    def format(self) -> str:
        n = len(self.results)
        mean = sum(r.seconds for r in self.results) / max(n, 1)
        stage_means = {s: sum(r.stage_seconds.get(s, 0.0) for r in self.results) / max(n, 1)
                       for s in ("import", *self.stages)}
        lines = [f"fuzz: {n}/{self.planned} graphs in {self.seconds:.1f} s"
                 + (f" (budget {self.budget_s:g} s)" if self.budget_s else "")
                 + f", {mean:.1f} s per graph (" + ", ".join(f"{s} {t:.1f}" for s, t in stage_means.items())
                 + f"), stages {','.join(self.stages)}"
                 + (f", mutation {','.join(self.mutation)}" if self.mutation else ""),
                 f"failures: {len(self.failures)} in {sum(not r.ok for r in self.results)} graph(s)"]
        lines.append("coverage (graphs using each op / pattern / override kind):")
        cells = [f"{tag:22s}{count:4d} {100 * count / max(n, 1):4.0f}%"
                 + ("*" if tag in OP_TAGS and count / max(n, 1) < 0.05 else " ")
                 for tag, count in self.coverage().items()]
        for i in range(0, len(cells), 3):
            lines.append("  " + "   ".join(cells[i:i + 3]))
        low = self.under_covered()
        if low:
            lines.append(f"  * under 5% of graphs: {', '.join(low)}")
        if self.failures:
            lines.append("failures:")
            lines += [f"  {f}" for f in self.failures]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"graphs": len(self.results), "planned": self.planned, "seconds": round(self.seconds, 2),
                "budget_s": self.budget_s, "stages": list(self.stages), "mutation": self.mutation,
                "failures": [asdict(f) for f in self.failures], "coverage": self.coverage(),
                "under_covered": self.under_covered(),
                "results": [asdict(r) for r in self.results]}


def run(seeds: Iterable[int], time_budget_s: float | None = None, stages: Iterable[str] = STAGES,
        out_dir: str | Path | None = None, mutation: Iterable[str] | None = None,
        progress: Callable[[int, int, GraphResult], None] | None = None,
        stop_at_first_failure: bool = False, target: str | dict | None = None) -> Report:
    """Run the graphs of ``seeds`` in order. With ``time_budget_s``, no graph starts once the time spent
    plus the mean time per graph so far would pass the budget (the first graph always runs)."""
    seeds = list(seeds)
    stages = tuple(stages)
    started = time.perf_counter()
    results: list[GraphResult] = []
    for seed in seeds:
        elapsed = time.perf_counter() - started
        if results and time_budget_s is not None and elapsed + elapsed / len(results) > time_budget_s:
            break
        result = run_graph(seed, stages, out_dir, mutation, target)
        results.append(result)
        if progress is not None:
            progress(len(results), len(seeds), result)
        if stop_at_first_failure and result.failures:
            break
    return Report(results, time.perf_counter() - started, time_budget_s, len(seeds), stages, sorted(mutation or ()))
