"""Group-wise 4-bit weights (DGQ's dual grain): the quantizer, the factorization the packer reads back, the
grouped VNNI kernel against numpy, and a small encoder block compiled end to end (oracle, bit-exact reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import te

import compiler
from backends import host_target
from backends.x86_packed import Knobs, build_kernel
from compiler.pipeline import QUANTIZED_PASSES, Pipeline
from compiler.quantization.quantize import quantize
from compiler.quantization.reference import compare_with_compiled
from passes import get_pass
from passes.insert_qdq import GROUP_MULTIPLIER_MAX, quantize_weight_groups
from passes.int4 import pack_matmul_nibbles
from passes.packed_layouts import factor_groups, matmul_grouped, pack_group_multipliers, pack_matmul_weight
from passes.quant_policy import LayerSpec, PolicyError, QuantPolicy


def _weight(rows: int, columns: int, group: int, seed: int = 0) -> np.ndarray:
    """A [K, N] weight whose groups differ in range by up to 30x, as real ones do."""
    rng = np.random.default_rng(seed)
    spread = np.repeat(rng.uniform(0.1, 3.0, size=(rows // group, columns)), group, axis=0)
    return (rng.normal(size=(rows, columns)) * spread).astype(np.float32)


@pytest.mark.parametrize("group", [32, 64, 128])
def test_a_group_scale_is_an_8bit_multiple_of_the_channel_scale_and_clips_nothing(group):
    weight = _weight(256, 24, group)
    values, scale = quantize_weight_groups(weight, 4, group)
    assert values.dtype == np.int16 and scale.shape == (24,)
    coarsest = factor_groups(values)  # any coarser grouping that factors is as exact for the kernel
    assert coarsest is not None and coarsest[0] >= group and coarsest[0] % group == 0
    size, q, multiplier = factor_groups(values, sizes=(group,))
    assert np.array_equal(np.repeat(multiplier, size, axis=0) * q.astype(np.int64), values)
    assert q.min() >= -8 and q.max() <= 7 and multiplier.max() <= GROUP_MULTIPLIER_MAX
    # ceil(sigma / s): each group's step covers its largest weight, so none is clipped and every error is at
    # most half a step (the factor's multiplier is the quantizer's times the gcd of the group's Q: a bound)
    step = np.repeat(multiplier, size, axis=0) * scale.astype(np.float64)
    assert np.all(np.abs(weight - values * scale.astype(np.float64)) <= step / 2 * (1 + 1e-6))


def test_group_wise_weights_beat_per_channel_ones_on_uneven_groups():
    from passes.insert_qdq import quantize_weight

    weight = _weight(384, 64, 32, seed=1)
    grouped, group_scale = quantize_weight_groups(weight, 4, 32)
    channel, channel_scale = quantize_weight(weight, 4, 1)
    error = lambda w: np.linalg.norm(weight - w) / np.linalg.norm(weight)  # noqa: E731
    assert error(grouped * group_scale) < 0.75 * error(channel * channel_scale)


def test_an_int16_weight_that_is_no_group_product_is_not_factored():
    weight = np.ones((64, 16), np.int16)
    weight[5, 3] = 257  # gcd 1 with its group, and 257 is not 4-bit
    assert factor_groups(weight) is None
    assert factor_groups(np.ones((48, 16), np.int16)) is None  # 48 rows: no group size divides them


def test_a_group_size_needs_4bit_weights_and_a_known_size():
    with pytest.raises(PolicyError, match="4-bit"):
        QuantPolicy.from_scheme("w8a8", weight_group=32)
    with pytest.raises(PolicyError, match="weight group 48"):
        LayerSpec(weight_bits=4, weight_group=48)


@pytest.mark.parametrize("rows, reduce, columns, group, knobs", [
    (1, 64, 20, 32, None),        # one token, columns padded past the output
    (7, 256, 48, 128, None),      # rows the tile does not divide
    (64, 384, 96, 32, Knobs(3, 4)),
])
def test_the_grouped_kernel_is_exact(rows, reduce, columns, group, knobs):
    values, _ = quantize_weight_groups(_weight(reduce, columns, group, seed=rows), 4, group)
    size, q, multiplier = factor_groups(values)
    data = te.placeholder((rows, reduce), "uint8", "data")
    packed = te.placeholder((-(-columns // 16), reduce // 8, 16, 4), "uint8", "packed")
    multipliers = te.placeholder((-(-columns // 16), reduce // size, 16), "uint8", "multipliers")
    func = te.create_prim_func([data, packed, multipliers, matmul_grouped(data, packed, multipliers, columns, size)])
    lib = build_kernel(func, host_target(2), knobs)
    x = np.random.default_rng(3).integers(0, 256, size=(rows, reduce)).astype(np.uint8)
    out = tvm.runtime.tensor(np.zeros((rows, columns), np.int32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(pack_matmul_nibbles(pack_matmul_weight(q, 4))),
                tvm.runtime.tensor(pack_group_multipliers(multiplier)), out)
    np.testing.assert_array_equal(out.numpy(), x.astype(np.int64) @ values.astype(np.int64))


class _Feedforward(torch.nn.Module):
    """A transformer's feed-forward block: Linear -> GELU -> Linear, with the residual and a LayerNorm."""

    def __init__(self, width: int = 64, hidden: int = 128):
        super().__init__()
        self.up, self.down = torch.nn.Linear(width, hidden), torch.nn.Linear(hidden, width)
        self.norm = torch.nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.down(torch.nn.functional.gelu(self.up(x))))


def test_a_group_wise_encoder_block_compiles_passes_the_oracle_and_matches_the_reference(tmp_path):
    torch.manual_seed(0)
    module = _Feedforward().eval()
    example = torch.randn(1, 16, 64)
    samples = [{"x": np.random.default_rng(s).normal(size=(1, 16, 64)).astype(np.float32)} for s in range(6)]
    imported = compiler.import_model(module, example_inputs=(example,), input_names=["x"])
    policy = QuantPolicy.from_scheme("w4a8", weight_group=32)
    model = compiler.compile(imported, quantize=policy, calibration=samples[:4], oracle=True)
    layers = model.manifest["quantization"]["layers"]
    assert {name: spec.get("weight_group") for name, spec in layers.items()} == {"matmul_0": 32, "matmul_1": 32}
    # the kernels the library runs are the grouped ones, and every integer tensor is the reference's
    lowered, _ = Pipeline(QUANTIZED_PASSES).run(quantize(imported, samples[:4], policy).imported.mod)
    kernels = [f for f in get_pass("pack_int8_layers")(lowered).functions.values()
               if isinstance(f, tvm.tirx.PrimFunc) and "qc.packed_layout" in f.attrs]
    assert sorted(int(f.attrs["qc.packed_layout"]["weight_group"]) for f in kernels) == [32, 32]
    for agreement in compare_with_compiled(lowered, samples[4:]):
        assert agreement.integer_tensors > 0 and agreement.differing == [] and agreement.outputs_equal
    with torch.no_grad():
        want = module(torch.from_numpy(samples[5]["x"])).numpy()
    got = model.run(samples[5])["output_0"]
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


def test_bits_auto_refuses_group_wise_weights_in_one_line():
    module = _Feedforward().eval()
    imported = compiler.import_model(module, example_inputs=(torch.randn(1, 16, 64),), input_names=["x"])
    samples = [{"x": np.zeros((1, 16, 64), np.float32)}]
    with pytest.raises(compiler.CompilerError, match="does not take group-wise weights"):
        compiler.compile(imported, quantize=QuantPolicy.from_scheme("w4a8", weight_group=32), bits="auto",
                         max_size=1e6, calibration=samples)
