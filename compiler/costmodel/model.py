"""A learned model of layer-kernel latency: xgboost on features that need no build, one model per CPU family.

    model = CostModel.train(records)                   # records of one CPU and one template hash
    model.predict_ms([layer.features(8) for layer in layers])
    model.overhead_ms("w8a8", graph_features(prepared))   # the time outside the layer kernels
    report = evaluate(records)                         # leave-one-model-out, with the noise floor and a baseline

What it learns: each kernel's time over its *ideal* time (2 x MACs at the measured peak of its kind: the
int8 ``vpdpbusd`` peak for integer kernels, the fp32 FMA peak for float ones), as a logarithm. The ratio is
bounded (a kernel at 80% of peak reads 1.25, a depthwise one at 10% reads 10) where raw times span six
decades, so trees extrapolate to sizes they did not see. Training times are first scaled to a reference
peak per record (``ms x peak measured before the record's source / reference peak``: a shared host that
drops to half speed for a minute halves its peak too, and its records are brought back to the common
state); predictions are of that reference state unless ``peaks`` are given. ``compile`` does not give
them: one peak measured at compile time is noisier than the state it would correct for (a reading of 762
GOP/s against a reference of 938 once scaled a whole EfficientNet-Lite0 prediction up by 23% while the model
ran at its usual speed).

Outside the layer kernels (quantize, pooling, residual adds, softmax, glue) a model spends a time that
scales with the bytes those ops touch, by kind, and their count (``features.graph_features``); per scheme,
a non-negative least-squares fit over the training models' whole-model records gives ms per op, ms per MB
of each kind and a constant.

The baseline (``Roofline``): ideal time / the median efficiency of the training kernels of the same op and
weight width, the FLOPs model a compiler would use without learning.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .collect import CostModelError, Record, cpu_name, template_hash
from .features import FEATURES, OVERHEAD_FEATURES

FORMAT = 1
MIN_TEST_MS = 0.02
"""Kernels under 20 us are left out of the evaluation's error (the issue's protocol): timer and call overhead."""

_PARAMETERS = {"n_estimators": 600, "max_depth": 6, "learning_rate": 0.05, "subsample": 0.8,
               "colsample_bytree": 0.8, "min_child_weight": 2, "objective": "reg:squarederror", "nthread": 2}


def ideal_ms(features: Mapping[str, float], peaks: Mapping[str, float]) -> float:
    """2 x MACs at the peak of the kernel's kind, in ms."""
    peak = peaks["fp32"] if features["weight_bits"] == 32 else peaks["int8"]
    return 2 * features["macs"] / (peak * 1e9) * 1e3


def _matrix(rows: Sequence[Mapping[str, float]]) -> np.ndarray:
    return np.array([[float(row[name]) for name in FEATURES] for row in rows], dtype=np.float64)


@dataclass
class CostModel:
    """The regressor, the reference peaks its times are scaled to, and the overhead fit per scheme."""

    cpu: str
    templates: str
    reference_peaks: dict[str, float]
    booster: Any                        # xgboost.Booster
    overhead: dict[str, list[float]]    # scheme -> ms per unit of each of OVERHEAD_FEATURES, then a constant
    trained_on: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def train(cls, records: Sequence[Record], parameters: Mapping[str, Any] | None = None) -> "CostModel":
        """Fit on ``records`` (one CPU, one template hash)."""
        import xgboost

        layers = [r for r in records if r.layer is not None]
        if not layers:
            raise CostModelError("no layer records to train on: run `qc costmodel collect` first")
        cpus, hashes = {r.cpu for r in layers}, {r.templates for r in layers}
        if len(cpus) != 1 or len(hashes) != 1:
            raise CostModelError(f"records of several CPUs {sorted(cpus)} or template hashes {sorted(hashes)}: "
                                 "train one model per CPU and template hash")
        reference = {kind: float(np.median([r.peaks[kind] for r in layers])) for kind in ("int8", "fp32")}
        x = _matrix([r.features for r in layers])
        y = np.array([_log_ratio(r, reference) for r in layers])
        settings = {**_PARAMETERS, **(parameters or {})}
        rounds = settings.pop("n_estimators")
        booster = xgboost.train(settings, xgboost.DMatrix(x, label=y, feature_names=list(FEATURES)), rounds)
        model = cls(cpus.pop(), hashes.pop(), reference, booster, {},
                    {"records": len(layers), "sources": sorted({r.source for r in layers})})
        model.overhead = _fit_overhead([r for r in records if r.layer is None], model)
        return model

    def predict_ms(self, rows: Sequence[Mapping[str, float]], peaks: Mapping[str, float] | None = None) -> np.ndarray:
        """Predicted ms of each kernel (feature rows), at ``peaks`` (default: the reference state)."""
        import xgboost

        if not rows:
            return np.zeros(0)
        peaks = peaks or self.reference_peaks
        ratio = np.exp(self.booster.predict(xgboost.DMatrix(_matrix(rows), feature_names=list(FEATURES))))
        return np.array([ideal_ms(row, peaks) for row in rows]) * ratio

    def overhead_ms(self, scheme: str, graph: Mapping[str, float], peaks: Mapping[str, float] | None = None) -> float:
        """The time outside the layer kernels of a model with these graph features, at ``peaks`` (default:
        the reference state; the time scales with the int8 peak, as the host's state moves both)."""
        weights = self.overhead.get(scheme) or self.overhead.get("w8a8") or [0.0] * (len(OVERHEAD_FEATURES) + 1)
        scale = self.reference_peaks["int8"] / peaks["int8"] if peaks else 1.0
        return float(np.dot(weights, [*(graph[name] for name in OVERHEAD_FEATURES), 1.0])) * scale

    # -- files -------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model as one JSON file (the booster embedded as xgboost's JSON), atomically."""
        path = Path(path)
        data = {"format": FORMAT, "cpu": self.cpu, "templates": self.templates, "features": list(FEATURES),
                "reference_peaks": self.reference_peaks, "overhead": self.overhead, "trained_on": self.trained_on,
                "booster": json.loads(bytes(self.booster.save_raw("json")).decode())}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CostModel":
        import xgboost

        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise CostModelError(f"cannot read cost model {path}: {error}") from None
        if data.get("format") != FORMAT or data.get("features") != list(FEATURES):
            raise CostModelError(f"{path} is a cost model of another format or feature set: retrain it")
        booster = xgboost.Booster()
        booster.load_model(bytearray(json.dumps(data["booster"]).encode()))
        return cls(data["cpu"], data["templates"], data["reference_peaks"], booster, data["overhead"],
                   data.get("trained_on", {}))


SHIPPED = Path(__file__).resolve().parent / "data"
"""Models shipped with qc, one per CPU family: ``data/<cpu>.json``."""


def user_model_path(cpu: str) -> Path:
    """Where ``qc costmodel train`` writes by default, and where ``for_target`` looks first."""
    root = Path(os.environ.get("QC_CACHE_DIR") or Path.home() / ".cache" / "qc")
    return root / "costmodel" / f"{cpu}.json"


def for_target(target: Any = None, path: str | Path | None = None) -> tuple[CostModel | None, str]:
    """The cost model that applies to ``target`` and why: ``path``, else the one ``qc costmodel train`` wrote
    for this CPU, else the shipped one; None with the reason when there is none or the one found was trained
    on another CPU or other kernel templates (then the caller measures)."""
    cpu = cpu_name(target)
    if path is None:
        path = next((p for p in (user_model_path(cpu), SHIPPED / f"{cpu}.json") if p.is_file()),
                    SHIPPED / f"{cpu}.json")
    path = Path(path)
    if not path.is_file():
        return None, f"no cost model for CPU {cpu!r} ({path})"
    model = CostModel.load(path)
    if model.cpu != cpu:
        return None, f"{path} was trained on CPU {model.cpu!r}, not {cpu!r}"
    if model.templates != template_hash():
        return None, f"{path} was trained on kernel templates {model.templates}, these are {template_hash()}"
    return model, f"predicted by cost model {path} ({model.trained_on.get('records', '?')} records)"


def _log_ratio(record: Record, reference: Mapping[str, float]) -> float:
    """log(the record's time at the reference peak / its ideal time there)."""
    scaled = record.ms * record.peak() / (reference["fp32"] if record.scheme == "fp32" else reference["int8"])
    return math.log(scaled / ideal_ms(record.features, reference))


def _fit_overhead(wholes: Sequence[Record], model: CostModel) -> dict[str, list[float]]:
    """Per scheme: non-negative ms per unit of each of ``OVERHEAD_FEATURES`` and a constant, fitting the
    models' whole time minus their layer kernels' (both measured in one process), at the reference peak."""
    from scipy.optimize import nnls

    fits: dict[str, list[float]] = {}
    for scheme in sorted({r.scheme for r in wholes}):
        rows = [r for r in wholes if r.scheme == scheme and r.family == "model"] or \
            [r for r in wholes if r.scheme == scheme]
        a = np.array([[*(r.graph[name] for name in OVERHEAD_FEATURES), 1.0] for r in rows])
        b = np.array([max(0.0, r.ms - r.layers_ms) * r.peaks["int8"] / model.reference_peaks["int8"] for r in rows])
        fits[scheme] = [float(v) for v in nnls(a, b)[0]]
    return fits


# -- evaluation --------------------------------------------------------------------------------------------

@dataclass
class HeldOut:
    """One held-out model's figures: per-kernel errors of the model and the baseline, the noise floor, whole
    models per scheme."""

    source: str
    kernels: int                 # test kernels (>= MIN_TEST_MS in the truth run)
    dropped: int                 # training records dropped for sharing a key with this model
    mape: float
    spearman: float
    baseline_mape: float
    baseline_spearman: float
    floor_mape: float | None     # the second run against the first, same kernels (None: one run only)
    floor_spearman: float | None
    whole: dict[str, dict[str, float]]  # scheme -> {"measured": ms, "predicted": ms, "error": relative}
    decisions: tuple[int, int] = (0, 0)  # int8 or float per layer: (agreeing with measurement, layers whose
                                         # W8A8 and fp32 kernel times differ by more than 10%)


def held_out_training(records: Sequence[Record], source: str) -> tuple[list[Record], int]:
    """(the records a model of everything but ``source`` trains on, how many layer records that drops for
    sharing an (op, shapes, widths) key with ``source``): every other source's records whose key ``source``
    does not have, whole-model records (no key) included."""
    keys = {r.key for r in records if r.source == source and r.key is not None}
    train = [r for r in records if r.source != source and r.key not in keys]
    dropped = sum(1 for r in records if r.source != source and r.key is not None and r.key in keys)
    return train, dropped


def evaluate(records: Sequence[Record], truth_run: str = "1", parameters: Mapping[str, Any] | None = None,
             on_step: Any = None) -> list[HeldOut]:
    """Leave-one-model-out over the ``family == "model"`` sources: train on every other record whose key the
    held-out model does not have, test on the held-out model's kernels of ``truth_run`` (>= 20 us); the
    other run of the same kernels gives the noise floor."""
    from scipy.stats import spearmanr

    held = sorted({r.source for r in records if r.family == "model"})
    results = []
    for index, source in enumerate(held):
        if on_step:
            on_step(source, index, len(held))
        test = [r for r in records if r.source == source and r.layer is not None and r.run == truth_run]
        train, dropped = held_out_training(records, source)
        model = CostModel.train(train, parameters)
        test = [r for r in test if r.ms >= MIN_TEST_MS]
        if not test:
            continue
        truth = np.array([r.ms for r in test])
        predicted = model.predict_ms([r.features for r in test])  # at the reference state, as compile predicts
        baseline = Roofline.fit([r for r in train if r.layer is not None]).predict(test)
        other = {(r.scheme, r.layer): r.ms for r in records
                 if r.source == source and r.layer is not None and r.run != truth_run}
        pairs = [(t, other[(r.scheme, r.layer)]) for r, t in zip(test, truth) if (r.scheme, r.layer) in other]
        floor = floor_rank = None
        if pairs:
            first, second = np.array(pairs).T
            floor, floor_rank = _mape(second, first), float(spearmanr(first, second).statistic)
        whole = {}
        for record in (r for r in records if r.source == source and r.layer is None and r.run == truth_run):
            layer_rows = [r for r in records if r.source == source and r.scheme == record.scheme
                          and r.run == truth_run and r.layer is not None]
            estimate = float(model.predict_ms([r.features for r in layer_rows]).sum()) + \
                model.overhead_ms(record.scheme, record.graph)
            whole[record.scheme] = {"measured": record.ms, "predicted": estimate,
                                    "error": estimate / record.ms - 1}
        results.append(HeldOut(source, len(test), dropped, _mape(predicted, truth),
                               float(spearmanr(predicted, truth).statistic), _mape(baseline, truth),
                               float(spearmanr(baseline, truth).statistic), floor, floor_rank, whole,
                               _decisions(model, [r for r in records if r.source == source and r.run == truth_run])))
    return results


def _decisions(model: CostModel, records: Sequence[Record]) -> tuple[int, int]:
    """Of the layers whose measured W8A8 and fp32 kernel times differ by more than 10%, how many the model
    puts on the same side (integer faster or float faster), and how many there are."""
    times = {(r.layer, r.scheme): r for r in records if r.layer is not None}
    pairs = [(integer, times[(layer, "fp32")]) for (layer, scheme), integer in times.items()
             if scheme == "w8a8" and (layer, "fp32") in times and abs(integer.ms / times[(layer, "fp32")].ms - 1) > 0.1]
    if not pairs:
        return 0, 0
    integer_ms = model.predict_ms([i.features for i, _ in pairs])
    float_ms = model.predict_ms([f.features for _, f in pairs])
    agree = sum((i_ms < f_ms) == (i.ms < f.ms) for (i, f), i_ms, f_ms in zip(pairs, integer_ms, float_ms))
    return int(agree), len(pairs)


def _mape(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted - truth) / truth))


@dataclass
class Roofline:
    """The FLOPs baseline: ideal time / the training kernels' median efficiency for the same (op, weight bits)."""

    efficiency: dict[tuple[int, int], float]
    overall: float

    @classmethod
    def fit(cls, records: Iterable[Record]) -> "Roofline":
        groups: dict[tuple[int, int], list[float]] = {}
        for r in records:
            groups.setdefault((int(r.features["op"]), int(r.features["weight_bits"])), []).append(
                ideal_ms(r.features, r.peaks) / r.ms)
        every = [v for values in groups.values() for v in values]
        return cls({k: float(np.median(v)) for k, v in groups.items()}, float(np.median(every)))

    def predict(self, records: Sequence[Record]) -> np.ndarray:
        return np.array([ideal_ms(r.features, r.peaks) / self.efficiency.get(
            (int(r.features["op"]), int(r.features["weight_bits"])), self.overall) for r in records])


def report_text(results: Sequence[HeldOut]) -> str:
    """The leave-one-model-out table (``qc costmodel eval``)."""
    lines = [f"{'held out':20s} {'kernels':>7s} {'MAPE':>6s} {'rho':>5s} {'floor':>6s} {'rho':>5s} "
             f"{'roofline':>8s} {'rho':>5s} {'int8|fp32':>9s}  whole model (predicted / measured - 1)"]
    for h in results:
        floor = "" if h.floor_mape is None else f"{h.floor_mape:6.1%}"
        floor_rho = "" if h.floor_spearman is None else f"{h.floor_spearman:5.3f}"
        whole = ", ".join(f"{s} {w['error']:+.1%}" for s, w in sorted(h.whole.items()))
        lines.append(f"{h.source:20s} {h.kernels:7d} {h.mape:6.1%} {h.spearman:5.3f} {floor:>6s} {floor_rho:>5s} "
                     f"{h.baseline_mape:8.1%} {h.baseline_spearman:5.3f} {h.decisions[0]:4d}/{h.decisions[1]:<4d}  {whole}")
    return "\n".join(lines)
