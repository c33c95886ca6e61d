"""The mixed-precision Pareto sweep: quality against weight size and against measured latency.

    points = pareto_sweep(imported, calibration, evaluation, budgets=3)
    print(format_table(points)); plot(points, "pareto.png")

Points: uniform W8, uniform W4, and the ILP's allocation at ``budgets`` weight-size budgets spaced evenly
between them (each also under ``max_latency`` when given). Every point is compiled (integer-only, the same
calibration and observer) and measured: weight bytes, latency predicted from the per-layer kernel table
(``compiler.quantization.layer_latency``) and latency measured on the whole compiled model (median of ``repeat`` runs),
and its quality against the float model on the evaluation samples: output SQNR in dB and, for a
classifier ([1, classes] output), top-1 agreement. A point is on a frontier when no other point is at least
as small (or fast) and at least as accurate (SQNR), and strictly better in one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from frontends import ImportedModel

from ..bench import median_ms
from .bit_allocation import allocate, layer_costs, measured_sensitivity, policy_for
from ..errors import CompilerError
from .layer_latency import measure_layer_latency
from .quantize import compile_float, compile_quantized

Samples = Sequence[Mapping[str, np.ndarray]]


@dataclass
class ParetoPoint:
    """One compiled allocation: its widths, cost and quality against float."""

    label: str
    bits: dict[str, int]
    size_bytes: float
    predicted_ms: float
    measured_ms: float
    sqnr_db: float
    top1_agreement: float | None
    frontier: list[str] = field(default_factory=list)  # "size", "latency": the frontiers it lies on

    @property
    def layers_at_4(self) -> int:
        return sum(b == 4 for b in self.bits.values())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def pareto_sweep(imported: ImportedModel, calibration: Samples, evaluation: Samples | None = None, *,
                 budgets: int = 3, max_latency: float | None = None, observer: str = "minmax",
                 target: Any = None, work_dir: str | Path | None = None, repeat: int = 20,
                 on_point: Callable[[str], None] | None = None) -> list[ParetoPoint]:
    """Compile and measure uniform W8, uniform W4 and ``budgets`` ILP allocations (module docstring)."""
    calibration = list(calibration)
    evaluation = list(evaluation or calibration)
    if not calibration:
        raise CompilerError("the Pareto sweep needs calibration samples")
    if budgets < 1:
        raise CompilerError(f"budgets must be >= 1, got {budgets}")
    costs = layer_costs(imported)
    latency = measure_layer_latency(imported, calibration, target=target, work_dir=work_dir)
    sensitivity = measured_sensitivity(imported, calibration[:8])
    reference = _outputs(compile_float(imported, target, work_dir), evaluation)
    size4, size8 = (sum(c.size_bytes(b) for c in costs) for b in (4, 8))
    plans = [("uniform W8", {c.name: 8 for c in costs}, []), ("uniform W4", {c.name: 4 for c in costs}, [])]
    for i in range(1, budgets + 1):
        budget = size4 + (size8 - size4) * i / (budgets + 1)
        choice = allocate(sensitivity, costs, max_size_bytes=budget, max_latency_ms=max_latency,
                          latency=latency if max_latency is not None else None)
        same = next((plan for plan in plans if plan[1] == choice.bits), None)
        if same is None:
            plans.append(("ILP", choice.bits, [budget]))
        else:  # budgets the ILP answers with an allocation already in the sweep make one point
            same[2].append(budget)
    plans = [(f"ILP size <= {' / '.join(f'{b / 1e3:.1f}' for b in budgets)} KB" if budgets else label, bits)
             for label, bits, budgets in plans]
    points = []
    for label, bits in plans:
        if on_point:
            on_point(label)
        policy = policy_for(bits, observer)
        model = compile_quantized(imported, calibration, policy, target, work_dir)
        outputs = _outputs(model, evaluation)
        arrays = model.prepare(evaluation[0])
        measured = median_ms(lambda: model.call(arrays), repeat)
        points.append(ParetoPoint(label, bits, sum(c.size_bytes(bits[c.name]) for c in costs),
                                  latency.predict(bits), measured, _sqnr(outputs, reference),
                                  _top1(outputs, reference)))
    _mark_frontiers(points)
    return points


def _outputs(model, samples: Samples) -> list[list[np.ndarray]]:
    return [list(model.run(dict(sample)).values()) for sample in samples]


def _sqnr(outputs, reference) -> float:
    """10 log10(sum ref^2 / sum (out - ref)^2) over every output of every sample."""
    signal = sum(float(np.sum(np.square(r, dtype=np.float64))) for rs in reference for r in rs)
    noise = sum(float(np.sum(np.square(o.astype(np.float64) - r))) for os_, rs in zip(outputs, reference)
                for o, r in zip(os_, rs))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def _top1(outputs, reference) -> float | None:
    """Fraction of samples whose first output's argmax matches float's, for [1, classes] outputs."""
    first = reference[0][0]
    if first.ndim != 2 or first.shape[0] != 1 or first.shape[1] < 2:
        return None
    return float(np.mean([o[0].argmax() == r[0].argmax() for o, r in zip(outputs, reference)]))


def _mark_frontiers(points: list[ParetoPoint]) -> None:
    for axis, cost in (("size", lambda p: p.size_bytes), ("latency", lambda p: p.measured_ms)):
        for p in points:
            dominated = any(cost(q) <= cost(p) and q.sqnr_db >= p.sqnr_db and
                            (cost(q) < cost(p) or q.sqnr_db > p.sqnr_db) for q in points if q is not p)
            if not dominated:
                p.frontier.append(axis)


def table_rows(points: Sequence[ParetoPoint]) -> tuple[list[str], list[list[str]]]:
    """Header and rows for printing (the CLI's table and the README's)."""
    header = ["allocation", "layers at W4", "weight KB", "predicted ms", "measured ms", "SQNR dB", "top-1 agree",
              "frontier"]
    rows = [[p.label, f"{p.layers_at_4}/{len(p.bits)}", f"{p.size_bytes / 1e3:.1f}", f"{p.predicted_ms:.3f}",
             f"{p.measured_ms:.3f}", f"{p.sqnr_db:.2f}",
             "-" if p.top1_agreement is None else f"{p.top1_agreement:.1%}", ", ".join(p.frontier) or "-"]
            for p in points]
    return header, rows


def plot(points: Sequence[ParetoPoint], path: str | Path, title: str = "") -> Path:
    """Two panels, SQNR against weight size and against measured latency, frontiers drawn as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, axis, cost, xlabel in ((axes[0], "size", lambda p: p.size_bytes / 1e3, "weight size (KB)"),
                                   (axes[1], "latency", lambda p: p.measured_ms, "measured latency (ms)")):
        for p in points:
            style = {"uniform W8": "s", "uniform W4": "v"}.get(p.label, "o")
            ax.scatter(cost(p), p.sqnr_db, marker=style, s=50, zorder=3,
                       color="tab:red" if axis in p.frontier else "tab:gray")
            ax.annotate(p.label, (cost(p), p.sqnr_db), textcoords="offset points", xytext=(5, 4), fontsize=7)
        front = sorted((p for p in points if axis in p.frontier), key=cost)
        ax.plot([cost(p) for p in front], [p.sqnr_db for p in front], color="tab:red", lw=1, zorder=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("output SQNR vs float (dB)")
        ax.grid(alpha=0.3)
    fig.suptitle(title or "mixed precision: quality vs cost (red: Pareto frontier)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
