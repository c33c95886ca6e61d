"""Calibration observers: stream activation batches in, get a clipping range out, in constant memory.

Not a pass: the numerics the calibration pass uses per tensor. Every observer sees batches through
``observe`` and keeps O(bins) state whatever the number of samples; ``range()`` returns (lo, hi) with
lo <= 0 <= hi, the interval the quantizer maps onto the integer grid.

- ``minmax``: the extreme values seen.
- ``percentile``: the p-th percentile of |x| (symmetric) or the (100-p, p) percentiles (asymmetric).
- ``entropy``: TensorRT's KL-divergence threshold. Symmetric (int, zero point 0): a threshold t on the |x|
  histogram, range [-t, t] narrowed to the values seen (so post-ReLU tensors keep lo = 0 and all 2^bits
  levels). Asymmetric (uint with a zero point, the default for activations): on the histogram of x, the
  windows [s lo, s hi] of the extremes seen, 0 < s <= 1, both tails folded into the window's end bins (as
  onnxruntime's entropy calibrator folds them, there around zero): the zero point stays where min/max put
  it and only the scale shrinks, so a skewed tensor (a normalised image: a spike of background at -0.42,
  strokes up to 2.82) is no longer cut to +-0.42. (Freeing both ends lets KL pick a window of one bin per
  level, where the quantized histogram equals its reference: zero divergence, nothing kept.)
- ``mse``: the threshold (symmetric) or window (asymmetric: each end moved in turn, coordinate descent)
  minimising the expected squared quantization error over the histogram.

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
        self.zeros = 0  # exact zeros among the counts (every range holding 0 represents them exactly)
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
        self.zeros += int(np.count_nonzero(values == 0))

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
    """Shared by the histogram observers: subclasses score a window [start, stop) of histogram bins (the
    clipped tails folded into its end bins) quantized to ``levels`` values; the lowest score wins."""

    MIN_LEVELS = 2  # the fewest quantization levels a window is scored with

    def __init__(self, name: str = "tensor", bits: int = 8, bins: int = 2048, symmetric: bool = True):
        if not symmetric and bins % 4:
            raise ValueError(f"an asymmetric histogram needs bins divisible by 4, got {bins}")
        self.name, self.bits, self.symmetric = name, bits, symmetric
        self.histogram = _Histogram(bins, signed=not symmetric)

    def observe(self, batch: np.ndarray) -> None:
        self.histogram.add(_checked(batch, self.name))

    def range(self) -> tuple[float, float]:
        counts = self.histogram.counts.astype(np.float64)
        if not counts.sum():
            raise ObserverError(f"{self.name}: no calibration data observed")
        edges = self.histogram.edges
        if self.symmetric:  # a threshold on |x|: windows [0, cut)
            levels = max(_levels(self.histogram, self.bits), self.MIN_LEVELS)
            cuts = range(min(levels, counts.size), counts.size + 1)
            scores = [self._score(counts, 0, cut, levels) for cut in cuts]
            return _clipped(self.histogram, float(edges[cuts[int(np.argmin(scores))]]))
        start, stop = self._window(counts, max(2**self.bits, self.MIN_LEVELS))
        return min(float(edges[start]), 0.0), max(float(edges[stop]), 0.0)

    def _window(self, counts: np.ndarray, levels: int) -> tuple[int, int]:
        """The asymmetric clip as bins [start, stop) of the signed histogram."""
        return _descend(counts, levels, self._score)

    def _score(self, counts: np.ndarray, start: int, stop: int, levels: int) -> float:
        raise NotImplementedError


def _extent(counts: np.ndarray) -> tuple[int, int, int]:
    """(first occupied bin, one past the last, the zero edge) of a signed histogram, the extent holding 0."""
    occupied = np.flatnonzero(counts)
    zero = counts.size // 2
    return min(int(occupied[0]), zero), max(int(occupied[-1]) + 1, zero), zero


def _scaled(counts: np.ndarray, levels: int, score) -> tuple[int, int]:
    """The window [s lo, s hi] (in bins) of the values seen that ``score`` prefers; each spans at least
    ``levels`` bins where the data do."""
    first, last, zero = _extent(counts)
    below, above = zero - first, last - zero
    longest = max(below, above)
    windows = []
    for k in range(1, longest + 1):
        start, stop = zero - round(below * k / longest), zero + round(above * k / longest)
        if stop - start >= min(levels, last - first) and stop > start:
            windows.append((start, stop))
    return windows[int(np.argmin([score(counts, a, b, levels) for a, b in windows]))]


def _descend(counts: np.ndarray, levels: int, score, rounds: int = 3) -> tuple[int, int]:
    """The window [start, stop) of a signed histogram (zero at the middle edge) that ``score`` prefers:
    from the values seen, move the upper end with the lower one fixed, then the lower end, ``rounds`` times
    or until neither moves. Every window contains zero and spans at least ``levels`` bins where the data do."""
    first, last, zero = _extent(counts)
    start, stop = first, last
    span = min(levels, stop - start)
    for _ in range(rounds):
        before = (start, stop)
        stops = range(max(zero, start + span, start + 1), last + 1)
        stop = stops[int(np.argmin([score(counts, start, s, levels) for s in stops]))]
        starts = range(first, min(zero, stop - span, stop - 1) + 1)
        start = starts[int(np.argmin([score(counts, s, stop, levels) for s in starts]))]
        if (start, stop) == before:
            break
    return start, stop


class EntropyObserver(_HistogramObserver):
    """TensorRT's calibration: the clip whose ``levels``-value quantization has the least KL divergence.

    The divergence is measured with at least 128 levels, as onnxruntime's calibrator does
    (``num_quantized_bins=128`` whatever the bits): with 16 (4 bits) a window of 16 bins quantizes to
    itself, and on MNIST's images (a comb of 256 pixel values) KL chose [-0.02, 0.12] of [-0.42, 2.82]."""

    MIN_LEVELS = 128

    def _window(self, counts: np.ndarray, levels: int) -> tuple[int, int]:
        inexact = counts.copy()  # exact zeros (a ReLU's) are exact at every scale: spread, they would
        inexact[counts.size // 2] -= self.histogram.zeros  # make KL prefer a window of one bin per level
        return _scaled(inexact if inexact.any() else counts, levels, self._score)

    def _score(self, counts: np.ndarray, start: int, stop: int, levels: int) -> float:
        return _kl_after_quantizing(counts, start, stop, levels)


def _kl_after_quantizing(counts: np.ndarray, start: int, stop: int, levels: int) -> float:
    """KL(P || Q): P = bins [start, stop) with the clipped tails folded into its end bins, Q = P merged
    into ``levels`` groups and spread back uniformly over each group's non-empty bins."""
    head = counts[start:stop]
    reference = head.copy()
    reference[0] += counts[:start].sum()
    reference[-1] += counts[stop:].sum()
    cut = stop - start
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
    """The clip minimising sum(count * (x - Q(x))^2) over the histogram's bin centres, Q the ``levels``-value
    grid from the window's lower edge to its upper edge."""

    def _score(self, counts: np.ndarray, start: int, stop: int, levels: int) -> float:
        edges = self.histogram.edges
        centers = (edges[:-1] + edges[1:]) / 2
        lo, hi = edges[start], edges[stop]
        step = (hi - lo) / (levels - 1)
        quantized = lo + np.clip(np.round((centers - lo) / step), 0, levels - 1) * step
        return float(np.sum(counts * (centers - quantized) ** 2))


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
        return EntropyObserver(name, bits=bits, symmetric=symmetric)
    if kind == "mse":
        return MseObserver(name, bits=bits, symmetric=symmetric)
    raise ValueError(f"unknown observer {kind!r}; choose one of {', '.join(OBSERVERS)}")
