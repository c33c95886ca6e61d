"""fold_batchnorm: conv2d [+ bias] -> batch_norm becomes one convolution with the same outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import compiler
import models
from models import mnist_cnn
from compiler import Pipeline
from passes import get_pass

from .conftest import max_rel_err


def _prepared(module, example):
    mod = compiler.import_model(module, example_inputs=example).mod
    return Pipeline(["canonicalize_bindings", "fold_constant"]).run(mod)[0]


def _count(mod, op: str) -> int:
    return mod["main"].script().count(op)


class _ConvBn(torch.nn.Module):
    def __init__(self, bias: bool, groups: int = 1):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1, bias=bias, groups=groups)
        self.bn = torch.nn.BatchNorm2d(4)
        self.after_relu = torch.nn.BatchNorm2d(4)  # not after a convolution: must stay
        with torch.no_grad():
            for norm in (self.bn, self.after_relu):
                norm.weight.uniform_(0.5, 2)
                norm.bias.uniform_(-1, 1)
                norm.running_mean.uniform_(-1, 1)
                norm.running_var.uniform_(0.5, 2)

    def forward(self, x):
        return self.after_relu(torch.relu(self.bn(self.conv(x))))


@pytest.mark.parametrize("bias,groups", [(True, 1), (False, 1), (False, 4)])
def test_conv_batchnorm_is_folded_and_other_batchnorms_stay(bias, groups):
    module = _ConvBn(bias, groups).eval()
    x = torch.randn(1, 4, 8, 8)
    before = _prepared(module, (x,))
    after = get_pass("fold_batchnorm")(before)
    assert (_count(before, "R.nn.batch_norm"), _count(after, "R.nn.batch_norm")) == (2, 1)
    assert _count(after, "R.nn.conv2d") == 1
    compiled = compiler.compile(module, example_inputs=(x,), verify=True)
    assert max_rel_err(compiled.run(x)["output_0"], module(x).detach().numpy()) <= 1e-5


@pytest.mark.parametrize("name,count", [("mnist-cnn", 1), ("efficientnet-lite0", 49)])
def test_every_batchnorm_of_the_real_models_folds(name, count):
    case = models.get(name)
    before = _prepared(case.module, case.example_inputs)
    assert _count(before, "R.nn.batch_norm") == count
    assert _count(get_pass("fold_batchnorm")(before), "R.nn.batch_norm") == 0


def test_folded_mnist_cnn_keeps_its_outputs(mnist_case):
    compiled = compiler.compile(mnist_case.module, example_inputs=mnist_case.example_inputs)
    assert "fold_batchnorm" in [step["pass"] for step in compiled.manifest["pipeline"]]
    digits = mnist_cnn.load_split()[2][:20]
    with torch.no_grad():
        expected = mnist_case.module(torch.from_numpy(digits)).numpy()
    actual = np.concatenate([compiled.run(d[None])["output_0"] for d in digits])
    assert max_rel_err(actual, expected) <= 1e-5
