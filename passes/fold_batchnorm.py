"""fold_batchnorm: fold an inference BatchNorm into the convolution in front of it.

Requires: ``relax.nn.conv2d`` (NCHW data, OIHW kernel, constant weight), optionally followed by ``relax.add``
of a constant per-channel bias, then ``relax.nn.batch_norm`` (axis 1, constant statistics, inference) and
``[0]`` of its result. Run it before ``decompose_for_inference``, after a ``fold_constant`` that turned the
importer's bias reshapes into constants.
Guarantees: each matched chain becomes ``conv2d(x, W') + b'`` with constants computed here, in float64 then
rounded to the weight dtype; unmatched BatchNorms are left for ``decompose_for_inference``.
Numerics (per output channel o):
    k      = gamma[o] / sqrt(var[o] + eps)
    W'[o]  = W[o] * k
    b'[o]  = (b[o] - mean[o]) * k + beta[o]           (b = 0 without a bias)
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import TupleGetItemPattern, is_const, is_op, rewrite_call, wildcard

from .registry import register_pass


class _Folder:
    def __init__(self) -> None:
        self.data, self.weight, self.bias = wildcard(), is_const(), is_const()
        self.conv = is_op("relax.nn.conv2d")(self.data, self.weight)
        self.biased = is_op("relax.add")(self.conv, self.bias)
        self.gamma, self.beta, self.mean, self.var = is_const(), is_const(), is_const(), is_const()
        self.norm = is_op("relax.nn.batch_norm")(self.conv | self.biased, self.gamma, self.beta, self.mean, self.var)
        self.pattern = TupleGetItemPattern(self.norm, 0)

    def rewrite(self, func: relax.Function) -> relax.Function:
        return rewrite_call(self.pattern, self._fold, func)

    def _fold(self, expr: relax.Expr, matches: dict) -> relax.Expr:
        conv, norm = matches[self.conv], matches[self.norm]
        if not _foldable(conv, norm):
            return expr
        weight = matches[self.weight].value.numpy()
        channels = weight.shape[0]
        bias = matches[self.bias].value.numpy() if self.bias in matches else np.zeros(channels)
        if bias.size != channels:
            return expr
        gamma, beta, mean, var = (matches[p].value.numpy().astype(np.float64)
                                  for p in (self.gamma, self.beta, self.mean, self.var))
        k = gamma / np.sqrt(var + float(norm.attrs.epsilon))
        new_weight = (weight.astype(np.float64) * k.reshape(-1, 1, 1, 1)).astype(weight.dtype)
        new_bias = ((bias.reshape(-1).astype(np.float64) - mean) * k + beta).astype(weight.dtype)
        folded = relax.Call(conv.op, [matches[self.data], relax.const(new_weight)], conv.attrs)
        return relax.op.add(folded, relax.const(new_bias.reshape(1, channels, 1, 1)))


def _foldable(conv: relax.Call, norm: relax.Call) -> bool:
    """Only NCHW/OIHW convolutions normalised along channels: a BatchNorm on another axis, or a kernel
    layout where axis 0 is not the output channel, would scale the wrong weights."""
    return (conv.attrs.data_layout == "NCHW" and conv.attrs.kernel_layout == "OIHW"
            and conv.attrs.out_layout == "NCHW" and int(norm.attrs.axis) == 1 and not bool(norm.attrs.training))


@register_pass("fold_batchnorm")
def fold_batchnorm(mod: tvm.IRModule) -> tvm.IRModule:
    """Relax -> Relax: conv2d [+ bias] -> batch_norm (inference) becomes conv2d with folded weights + bias."""
    folder = _Folder()
    result = mod.clone()  # passes never modify their input
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            result[gv] = folder.rewrite(func)
    return result
