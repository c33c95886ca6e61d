"""Float32 packed kernels (``pack_float_layers`` + ``backends.x86_packed``): results, FMA code, register tiles."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from tvm import te

import compiler
from compiler.profile import layer_of
from backends import host_target
from backends.x86_packed import Knobs, build_kernel, fit_tile
from models import mnist_cnn
from passes.packed_layouts import (
    FP32,
    ConvGeometry,
    conv_kernel,
    depthwise_conv2d,
    flatten_conv_weight,
    matmul_kernel,
    pack_conv_weight_by_channels,
    pack_matmul_weight,
)

from .conftest import AVX2_TARGET, PLAIN_TARGET, max_rel_err, run_kernel

FLOATS = ("float32", "float32")
RNG = np.random.default_rng(1)
TOLERANCE = 1e-5  # max |ours - float64 reference| / max |reference|


def normal(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def matmul_case(m: int, k: int, n: int):
    a, w = normal(m, k), normal(k, n)
    return matmul_kernel(m, k, n, FP32, FLOATS), [a, pack_matmul_weight(w, FP32.group)], a.astype(np.float64) @ w


def conv_case(cin: int, cout: int, kernel: int, stride: int, pad: int, size: int, by_channels: bool = False):
    geometry = ConvGeometry(cin, size, size, (kernel, kernel), (stride, stride), (pad,) * 4, (1, 1))
    x, w = normal(1, cin, size, size), normal(cout, cin, kernel, kernel)
    flat = flatten_conv_weight(w, FP32.group)
    stored = pack_conv_weight_by_channels(flat, FP32.group) if by_channels else flat
    inputs = [x, stored, geometry.reduce_offsets(FP32.group)]
    return (conv_kernel(geometry, cout, FP32, FLOATS, by_channels=by_channels), inputs,
            _reference(x, w, stride, pad))


def depthwise_case(channels: int, kernel: int, stride: int, pad: int, size: int):
    data = te.placeholder((1, channels, size, size), "float32", "data")
    weight = te.placeholder((channels, 1, kernel, kernel), "float32", "weight")
    out = depthwise_conv2d(data, weight, (stride, stride), (pad,) * 4, (1, 1), FP32)
    x, w = normal(1, channels, size, size), normal(channels, 1, kernel, kernel)
    return te.create_prim_func([data, weight, out]), [x, w], _reference(x, w, stride, pad, groups=channels)


def _reference(x, w, stride, pad, groups=1) -> np.ndarray:
    return torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), stride=stride,
                                      padding=pad, groups=groups).numpy()


CASES = {
    "matmul 24x64x40 (N padded to 48)": lambda: matmul_case(24, 64, 40),
    "conv 3x3/1 pad 1, 5->24 @9": lambda: conv_case(5, 24, 3, 1, 1, 9),
    "conv 7x7/2 pad 3, 3->16 @20": lambda: conv_case(3, 16, 7, 2, 3, 20),
    "conv 1x1, 32->16 @7": lambda: conv_case(32, 16, 1, 1, 0, 7),
    "conv 1x1, 24->40 @30 (900 pixels in strips of 64, the last partly past the image)":
        lambda: conv_case(24, 40, 1, 1, 0, 30),
    "conv 3x3/1 pad 1, 16->24 @64 (a 2.4 MB im2col: read strip by strip)": lambda: conv_case(16, 24, 3, 1, 1, 64),
    "conv 3x3/1 pad 1, 64->32 @7, output channels in the lanes": lambda: conv_case(64, 32, 3, 1, 1, 7, True),
    "conv 3x3/2 pad 1, 30->48 @14 (to 7x7), channels in the lanes": lambda: conv_case(30, 48, 3, 2, 1, 14, True),
    "conv 1x1, 40->48 @7, channels in the lanes (no im2col: steps read the image)":
        lambda: conv_case(40, 48, 1, 1, 0, 7, True),
    "depthwise 3x3/2 pad 1, 8 @15": lambda: depthwise_case(8, 3, 2, 1, 15),
    "depthwise 5x5/1 pad 2, 6 @12": lambda: depthwise_case(6, 5, 1, 2, 12),
    "depthwise 5x5/2 pad 2, 8 @13 (odd width: phases of 7 and 6 columns)": lambda: depthwise_case(8, 5, 2, 2, 13),
    "depthwise 3x3/2 unpadded, 4 @10": lambda: depthwise_case(4, 3, 2, 0, 10),
    "depthwise 3x3/1 pad 1, 4 @40 (rows wider than a vector: one row per task)": lambda: depthwise_case(4, 3, 1, 1, 40),
}


@pytest.mark.parametrize("case", CASES)
def test_float_kernels_match_a_float64_reference_on_each_instruction_set(case):
    func, inputs, expected = CASES[case]()
    for target in (host_target(2), AVX2_TARGET, PLAIN_TARGET):
        assert max_rel_err(run_kernel(func, inputs, expected.shape, "float32", target), expected) <= TOLERANCE, target


def test_float_conv_is_vector_fma_code_with_avx2():
    asm = build_kernel(conv_case(16, 32, 3, 1, 1, 12)[0], AVX2_TARGET).mod.inspect_source("asm")
    assert "vfmadd231ps" in asm and "ymm" in asm


def test_pointwise_channel_lanes_conv_is_fma_with_a_broadcast_operand():
    """Its steps are not tensorized (they read the image itself): LLVM must still make them vector FMAs."""
    asm = build_kernel(conv_case(40, 48, 1, 1, 0, 7, True)[0], host_target(2)).mod.inspect_source("asm")
    assert re.search(r"vfmadd231ps\s+\(.*\)\{1to16\}, %zmm", asm) or re.search(r"vbroadcastss", asm)
    assert "vfmadd231ps" in asm and "zmm" in asm


def test_register_tile_fits_the_loops_without_collapsing():
    default = Knobs(2, 3)
    assert fit_tile(default, 128, 24) == (2, 3)  # it divides: kept
    assert fit_tile(default, 128, 49) == (4, 1)  # 28x28 pixels = 49 blocks of 16: 4 accumulators, not 2
    assert fit_tile(default, 64, 196) == (2, 2)  # 56x56
    assert fit_tile(Knobs(8, 3), 256, 13) == (16, 1)  # 14x14 with the VNNI tile
    assert fit_tile(default, 1, 1) == (1, 1)


def test_float_model_packs_its_layers_and_keeps_its_outputs(mnist_imported):
    packed = compiler.compile(mnist_imported)
    plain = compiler.compile(mnist_imported, passes=[p for p in compiler.DEFAULT_PASSES if p != "pack_float_layers"])
    kernels = packed.manifest["kernel_info"]
    # each packed kernel is named after its layer, as the plan numbers them (``compiler.profile.layer_of``)
    assert {layer_of(name) for name in kernels} >= {"conv2d_0", "conv2d_1", "matmul_0"}
    assert not any("_f32" in name for name in plain.manifest["kernel_info"])
    for digit in mnist_cnn.load_split()[0][:20]:
        expected = plain.run(digit[None])["output_0"]
        assert max_rel_err(packed.run(digit[None])["output_0"], expected) <= TOLERANCE
