"""Calibration on the real MNIST CNN: sensible ranges, flat memory, clear errors on bad data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from models import mnist_cnn
from compiler.quantization.calibration import CalibrationError, calibrate, samples_from_npz
from passes.quant_policy import LayerSpec, PolicyError, QuantPolicy


@pytest.fixture(scope="module")
def imported(mnist_imported):
    return mnist_imported


@pytest.fixture(scope="module")
def digits():
    return mnist_cnn.load_split()[0][:64]


def _samples(digits, count=None):
    return ({"input": d[None]} for d in digits[:count])


def test_ranges_follow_the_activations(imported, digits):
    calibration = calibrate(imported, _samples(digits, 32))
    # the tensors that get a scale: the input image and the outputs of the two conv+bias+ReLU groups (max
    # pooling and the reshape pass integers through; the logits come straight from matmul_0's accumulator)
    assert calibration.samples == 32 and list(calibration.ranges) == ["in:x", "conv2d_0", "conv2d_1"]
    assert calibration.layer_inputs == {"conv2d_0": "in:x", "conv2d_1": "conv2d_0", "matmul_0": "conv2d_1"}
    lo, hi = calibration.input_range("conv2d_0")  # the normalised image: min (0 - 0.1307) / 0.3081
    assert lo == pytest.approx(-0.4242, abs=1e-4) and hi == pytest.approx(2.8215, abs=1e-4)
    assert calibration.ranges["conv2d_0"][0] == 0.0 and calibration.input_range("matmul_0")[0] == 0.0  # after ReLU


def test_per_layer_observer_override(imported, digits):
    policy = QuantPolicy().with_override("matmul_*", observer="percentile")
    calibration = calibrate(imported, _samples(digits, 16), policy)
    # a tensor is observed the way the layer reading it asks: conv2d_1's output is matmul_0's input
    assert calibration.observers == {"in:x": "minmax", "conv2d_0": "minmax", "conv2d_1": "percentile"}


def test_override_naming_no_layer_is_an_error(imported, digits):
    policy = QuantPolicy(overrides={"conv9": LayerSpec(weight_bits=4)})
    with pytest.raises(PolicyError, match=r"\['conv9'\] match no layer; layers are: conv2d_0, conv2d_1, matmul_0"):
        calibrate(imported, _samples(digits, 4), policy)


def test_empty_calibration_set(imported):
    with pytest.raises(CalibrationError, match="empty"):
        calibrate(imported, [])


def test_wrong_shape_and_non_finite_samples(imported, digits):
    with pytest.raises(CalibrationError, match=r"sample 0: input 'input': expected shape \[1, 1, 28, 28\]"):
        calibrate(imported, [{"input": digits[0]}])
    bad = digits[1][None].copy()
    bad[0, 0, 3, 3] = np.nan
    with pytest.raises(CalibrationError, match="sample 1, input 'input': holds NaN or Inf"):
        calibrate(imported, [{"input": digits[0][None]}, {"input": bad}])


def test_npz_samples_stacked_on_a_leading_axis(imported, digits, tmp_path):
    np.savez(tmp_path / "calib.npz", input=digits[:5])  # [N, 1, 28, 28] for an input of [1, 1, 28, 28]
    assert len(list(samples_from_npz(tmp_path / "calib.npz", imported.inputs))) == 5
    np.savez(tmp_path / "bad.npz", input=digits[:5, 0])
    with pytest.raises(CalibrationError, match=r"expected \[N, 1, 1, 28, 28\]"):
        list(samples_from_npz(tmp_path / "bad.npz", imported.inputs))


_PEAK_RSS = """
import resource, sys, models, compiler
from models import mnist_cnn
from compiler.quantization.calibration import calibrate
from passes.quant_policy import QuantPolicy
case = models.get("mnist-cnn")
imported = compiler.import_model(case.module, example_inputs=case.example_inputs)
digits = mnist_cnn.load_split()[0]
count = int(sys.argv[1])
calibrate(imported, ({"x": digits[i % len(digits)][None]} for i in range(count)), QuantPolicy.from_scheme("w8a8", "entropy"))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_peak_memory_is_flat_from_32_to_512_samples():
    peaks = [int(subprocess.run([sys.executable, "-c", _PEAK_RSS, str(n)], capture_output=True, text=True,
                                check=True).stdout.split()[-1]) for n in (32, 512)]
    assert peaks[1] - peaks[0] < 8 * 1024, peaks  # KiB: storing 480 more samples' activations would add ~21 MB
