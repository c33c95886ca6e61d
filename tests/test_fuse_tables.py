"""fuse_tables + elementwise_patterns: an 8-bit table (GELU here) reads the 8-bit tensor itself, joins its
producer's kernel, and keeps every integer tensor bit-exact."""

from __future__ import annotations

import numpy as np
import torch

import compiler
from backends import host_target
from compiler.pipeline import BACKEND_LOWERING, QUANTIZED_PASSES, Pipeline
from compiler.quantization.quantize import quantize
from compiler.quantization.reference import compare_with_compiled


class _Feedforward(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = torch.nn.Linear(32, 64), torch.nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(x)))


def test_a_gelu_table_joins_its_matmuls_kernel_and_stays_exact():
    torch.manual_seed(0)
    module = _Feedforward().eval()
    samples = [{"x": np.random.default_rng(s).normal(size=(1, 8, 32)).astype(np.float32)} for s in range(6)]
    imported = compiler.import_model(module, example_inputs=(torch.from_numpy(samples[0]["x"]),), input_names=["x"])
    lowered, _ = Pipeline(QUANTIZED_PASSES).run(quantize(imported, samples[:4], "w8a8").imported.mod)
    assert "R.take(" in lowered["main"].script()  # lower_integer's table
    names = list(BACKEND_LOWERING["x86"])
    with host_target(2):
        fused, _ = Pipeline(names[:names.index("fuse_ops") + 1]).run(lowered)
    kernels = [str(g.name_hint) for g in fused.functions]
    assert any("matmul_0" in k and k.endswith("lookup") for k in kernels), kernels  # in the first matmul's kernel
    assert "R.take(" not in fused["main"].script() and not any(k.startswith("take") for k in kernels)
    for agreement in compare_with_compiled(lowered, samples[4:]):
        assert agreement.integer_tensors > 0 and agreement.differing == [] and agreement.outputs_equal
