"""Calibration observers: the ranges they choose, their errors on bad data, and flat memory."""

from __future__ import annotations

import numpy as np
import pytest

from passes.observers import OBSERVERS, ObserverError, make_observer

RNG = np.random.default_rng(0)


def _feed(observer, batches):
    for batch in batches:
        observer.observe(batch)
    return observer.range()


def test_minmax_is_the_extremes_including_zero():
    assert _feed(make_observer("minmax"), [np.array([0.5, 2.0]), np.array([1.0, 3.0])]) == (0.0, 3.0)
    assert _feed(make_observer("minmax"), [np.array([-4.0, 1.0])]) == (-4.0, 1.0)


def test_percentile_ignores_rare_outliers():
    data = np.concatenate([RNG.uniform(-1, 1, 100_000), [50.0]])
    lo, hi = _feed(make_observer("percentile"), [data])
    assert 0.99 <= hi <= 1.05 and lo == -hi


def test_asymmetric_percentile_follows_each_tail():
    data = RNG.uniform(-1, 6, 200_000)
    lo, hi = _feed(make_observer("percentile", symmetric=False), np.split(data, 4))
    assert lo == pytest.approx(-1, abs=0.02) and hi == pytest.approx(6, abs=0.02)


@pytest.mark.parametrize("kind", ["entropy", "mse"])
def test_histogram_observers_clip_a_long_tailed_distribution(kind):
    data = RNG.laplace(0, 1, 200_000)
    lo, hi = _feed(make_observer(kind), np.split(data, 8))
    extreme = np.abs(data).max()
    assert lo == -hi and 2.0 < hi < 0.9 * extreme


@pytest.mark.parametrize("kind", ["entropy", "mse"])
def test_histogram_observers_keep_a_uniform_range(kind):
    lo, hi = _feed(make_observer(kind), [RNG.uniform(-1, 1, 100_000)])
    assert 0.9 <= hi <= 1.01


def test_histogram_growth_keeps_counts_exact():
    observer = make_observer("percentile", symmetric=False)
    batches = [RNG.uniform(-0.1, 0.1, 1000), RNG.uniform(-3, 3, 1000), RNG.uniform(-20, 20, 1000)]
    _feed(observer, batches)
    assert observer.histogram.counts.sum() == 3000
    assert observer.histogram.limit >= 20


@pytest.mark.parametrize("kind", OBSERVERS)
def test_memory_does_not_grow_with_samples(kind):
    observer = make_observer(kind)
    observer.observe(RNG.standard_normal(1000))
    size = _state_bytes(observer)
    for _ in range(50):
        observer.observe(RNG.standard_normal(1000))
    assert _state_bytes(observer) == size


@pytest.mark.parametrize("kind", OBSERVERS)
@pytest.mark.parametrize("bad", [np.array([]), np.array([1.0, np.nan]), np.array([np.inf])])
def test_bad_calibration_data_is_refused(kind, bad):
    with pytest.raises(ObserverError, match="conv1"):
        make_observer(kind, "conv1").observe(bad)


def test_range_before_any_data_is_an_error():
    with pytest.raises(ObserverError, match="no calibration data"):
        make_observer("entropy", "fc").range()


def _state_bytes(observer) -> int:
    histogram = getattr(observer, "histogram", None)
    return histogram.counts.nbytes if histogram is not None else len(vars(observer))


@pytest.mark.parametrize("kind", ["entropy", "mse"])
@pytest.mark.parametrize("bits", [8, 4])
def test_asymmetric_histogram_observers_keep_a_skewed_images_range(kind, bits):
    """MNIST's normalised digits: 256 pixel values, a spike of background at the minimum (-0.42), strokes to
    2.82. A symmetric |x| threshold cut them to +-0.42 (W4A4 entropy 37.3% accuracy); the asymmetric
    observers keep both ends."""
    from models import mnist_cnn

    digits = mnist_cnn.load_split()[0][:64]
    lo, hi = _feed(make_observer(kind, bits=bits, symmetric=False), list(digits))
    assert lo == pytest.approx(digits.min(), abs=0.01) and hi == pytest.approx(digits.max(), rel=0.01)


@pytest.mark.parametrize("bits", [8, 4])
def test_asymmetric_entropy_is_not_drawn_to_a_relus_zeros(bits):
    """Exact zeros (70% of a ReLU's output) are exact at any scale: they must not pull the range to 0."""
    data = np.where(RNG.random(200_000) < 0.7, 0.0, RNG.exponential(1.0, 200_000))
    lo, hi = _feed(make_observer("entropy", bits=bits, symmetric=False), np.split(data, 4))
    assert lo == 0.0 and 3.0 < hi <= data.max()


def test_asymmetric_mse_clips_each_tail_on_its_own():
    data = np.concatenate([RNG.laplace(0, 0.2, 100_000) - 0.5, RNG.laplace(4, 0.5, 100_000)])
    lo, hi = _feed(make_observer("mse", bits=4, symmetric=False), np.split(data, 4))
    assert data.min() < lo < -0.5 and 4.0 < hi < data.max()
