"""Calibration observers: stream activation batches in, get a clipping range out, in constant memory.

Not a pass: the numerics the calibration pass uses per tensor. Every observer sees batches through
``observe`` and keeps O(bins) state whatever the number of samples; ``range()`` returns (lo, hi) with
lo <= 0 <= hi, the interval the quantizer maps onto the integer grid.

- ``minmax``: the extreme values seen.
- ``percentile``: the p-th percentile of |x| (symmetric) or the (100-p, p) percentiles (asymmetric).
- ``entropy``: TensorRT's KL-divergence threshold t on the |x| histogram; range [-t, t] narrowed to the
  values seen (so post-ReLU tensors keep lo = 0 and all 2^bits levels).
- ``mse``: the threshold minimising the expected squared quantization error over the |x| histogram, narrowed
  the same way.

The histogram observers bin |x| (or x) into ``bins`` equal bins over [0, R] (or [-R, R]); when a batch
exceeds R, R doubles and pairs of bins merge, so counts stay exact and memory stays flat.
"""

from __future__ import annotations

import math

import numpy as np

OBSERVERS = ("minmax", "percentile", "entropy", "mse")


class ObserverError(ValueError):
    """Bad calibration data (empty, NaN/Inf) or an observer asked for a range before seeing any."""


def _checked(batch: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(batch, dtype=np.float64).ravel()
    if values.size == 0:
        raise ObserverError(f"{name}: empty calibration batch")
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise ObserverError(f"{name}: calibration batch holds {bad} NaN/Inf value(s)")
    return values


class MinMaxObserver:
    """Running minimum and maximum."""

    def __init__(self, name: str = "tensor"):
        self.name, self.lo, self.hi, self.count = name, math.inf, -math.inf, 0

    def observe(self, batch: np.ndarray) -> None:
        values = _checked(batch, self.name)
        self.lo, self.hi = min(self.lo, float(values.min())), max(self.hi, float(values.max()))
        self.count += values.size

    def range(self) -> tuple[float, float]:
        if not self.count:
            raise ObserverError(f"{self.name}: no calibration data observed")
        return min(self.lo, 0.0), max(self.hi, 0.0)


class _Histogram:
    """Counts of x (signed=True, bins over [-R, R]) or |x| (bins over [0, R]); R doubles as needed."""

    def __init__(self, bins: int, signed: bool):
        if bins < 2 or bins % 2:
            raise ValueError(f"bins must be an even number >= 2, got {bins}")
        self.bins, self.signed, self.limit = bins, signed, 0.0
        self.counts = np.zeros(bins, dtype=np.int64)
        self.lo, self.hi = math.inf, -math.inf  # the signed extremes seen

    def add(self, values: np.ndarray) -> None:
        self.lo, self.hi = min(self.lo, float(values.min())), max(self.hi, float(values.max()))
        values = values if self.signed else np.abs(values)
        peak = float(np.abs(values).max())
        if self.limit == 0.0:
            self.limit = peak if peak > 0 else 1e-8
        while peak > self.limit:
            self._double()
        low = -self.limit if self.signed else 0.0
        counts, _ = np.histogram(values, bins=self.bins, range=(low, self.limit))
        self.counts += counts

    def _double(self) -> None:
        merged = self.counts.reshape(-1, 2).sum(axis=1)
        fresh = np.zeros(self.bins, dtype=np.int64)
        if self.signed:  # bins stay centred on zero: the old range lands in the middle half
            quarter = self.bins // 4
            fresh[quarter: quarter + merged.size] = merged
        else:
            fresh[: merged.size] = merged
        self.counts, self.limit = fresh, self.limit * 2

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(-self.limit if self.signed else 0.0, self.limit, self.bins + 1)


class PercentileObserver:
    """Clip at the ``percentile`` of the distribution (default 99.99)."""

    def __init__(self, name: str = "tensor", percentile: float = 99.99, symmetric: bool = True, bins: int = 2048):
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        if not symmetric and bins % 4:
            raise ValueError(f"an asymmetric histogram needs bins divisible by 4, got {bins}")
        self.name, self.percentile, self.symmetric = name, percentile, symmetric
        self.histogram = _Histogram(bins, signed=not symmetric)

    def observe(self, batch: np.ndarray) -> None:
        self.histogram.add(_checked(batch, self.name))

    def range(self) -> tuple[float, float]:
        counts, edges = self.histogram.counts, self.histogram.edges
        total = counts.sum()
        if not total:
            raise ObserverError(f"{self.name}: no calibration data observed")
        cumulative = np.cumsum(counts) / total
        hi = float(edges[1:][np.searchsorted(cumulative, self.percentile / 100.0)])
        if self.symmetric:
            return -hi, hi
        lo = float(edges[:-1][np.searchsorted(cumulative, 1.0 - self.percentile / 100.0)])
        return min(lo, 0.0), max(hi, 0.0)


class _HistogramObserver:
    """Shared by the |x|-histogram observers: subclasses choose a threshold t from the counts."""

    def __init__(self, name: str = "tensor", bits: int = 8, bins: int = 2048):
        self.name, self.bits = name, bits
        self.histogram = _Histogram(bins, signed=False)

    def observe(self, batch: np.ndarray) -> None:
        self.histogram.add(_checked(batch, self.name))

    def range(self) -> tuple[float, float]:
        counts = self.histogram.counts.astype(np.float64)
        if not counts.sum():
            raise ObserverError(f"{self.name}: no calibration data observed")
        return _clipped(self.histogram, self._threshold(counts, _levels(self.histogram, self.bits)))

    def _threshold(self, counts: np.ndarray, levels: int) -> float:
        raise NotImplementedError


class EntropyObserver(_HistogramObserver):
    """TensorRT's calibration: the |x| threshold whose ``levels``-bin quantization has the least KL divergence."""

    def _threshold(self, counts: np.ndarray, levels: int) -> float:
        width = self.histogram.limit / self.histogram.bins
        candidates = range(min(levels, self.histogram.bins), self.histogram.bins + 1)
        divergences = [_kl_after_quantizing(counts, i, levels) for i in candidates]
        return candidates[int(np.argmin(divergences))] * width


def _kl_after_quantizing(counts: np.ndarray, cut: int, levels: int) -> float:
    """KL(P || Q): P = the first ``cut`` bins with the clipped tail folded into the last one, Q = P merged
    into ``levels`` groups and spread back uniformly over each group's non-empty bins."""
    head = counts[:cut]
    reference = head.copy()
    reference[-1] += counts[cut:].sum()
    starts = np.linspace(0, cut, levels + 1).astype(np.int64)[:-1]
    sizes = np.diff(np.append(starts, cut))
    occupied = (head > 0).astype(np.float64)
    group_sum, group_occupied = np.add.reduceat(head, starts), np.add.reduceat(occupied, starts)
    share = np.divide(group_sum, group_occupied, out=np.zeros_like(group_sum), where=group_occupied > 0)
    expanded = np.repeat(share, sizes) * occupied
    if not expanded.any():
        return math.inf
    p, q = _smoothed(reference / reference.sum()), _smoothed(expanded / expanded.sum())
    return float(np.sum(p * np.log(p / q)))


def _smoothed(distribution: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Move ``eps`` of mass onto every empty bin (taken evenly from the others) so KL stays finite,
    as TensorRT's and TVM's calibrators do."""
    empty = distribution == 0
    if not empty.any():
        return distribution
    taken = eps * empty.sum() / (~empty).sum()
    return np.where(empty, eps, distribution - taken).clip(min=1e-12)


class MseObserver(_HistogramObserver):
    """The threshold t minimising sum(count * (x - Q_t(x))^2) over the |x| histogram (200 candidates)."""

    CANDIDATES = 200

    def _threshold(self, counts: np.ndarray, levels: int) -> float:
        edges = self.histogram.edges
        centers = (edges[:-1] + edges[1:]) / 2
        best, best_error = self.histogram.limit, math.inf
        for threshold in np.linspace(self.histogram.limit / self.CANDIDATES, self.histogram.limit, self.CANDIDATES):
            step = threshold / (levels - 1)
            quantized = np.minimum(np.round(centers / step), levels - 1) * step
            error = float(np.sum(counts * (centers - quantized) ** 2))
            if error < best_error:
                best, best_error = float(threshold), error
        return best


def _levels(histogram: _Histogram, bits: int) -> int:
    """Integer levels available to |x|: all 2^bits for one-sided data (e.g. after ReLU), half otherwise."""
    return 2**bits if histogram.lo >= 0 else 2 ** (bits - 1)


def _clipped(histogram: _Histogram, threshold: float) -> tuple[float, float]:
    """The symmetric clip [-t, t] narrowed to the values actually seen (one-sided data keeps lo = 0)."""
    return max(-threshold, min(histogram.lo, 0.0)), min(threshold, max(histogram.hi, 0.0))


def make_observer(kind: str, name: str = "tensor", *, bits: int = 8, symmetric: bool = True):
    """An observer of ``kind`` (one of ``OBSERVERS``) for the tensor ``name``."""
    if kind == "minmax":
        return MinMaxObserver(name)
    if kind == "percentile":
        return PercentileObserver(name, symmetric=symmetric)
    if kind == "entropy":
        return EntropyObserver(name, bits=bits)
    if kind == "mse":
        return MseObserver(name, bits=bits)
    raise ValueError(f"unknown observer {kind!r}; choose one of {', '.join(OBSERVERS)}")
