"""expose_activations: make ``main`` also return the tensors calibration or a per-layer report must see.

Requires: a float Relax module whose ``main`` is one dataflow block (as the importers produce), after
``fold_constant`` (so weights are constants) and before ``legalize_ops``.
Guarantees: ``main`` returns ``(original outputs..., t_0, ..., t_{n-1})``. By default the t_i are the
anchors of ``plan_quantization`` under ``specs`` (every tensor that gets its own scale), named in the module
attribute ``qc.exposed``; with ``outputs=True`` they are the results of the quantizable calls
(``relax.nn.conv2d`` / ``relax.matmul`` with a constant weight, named ``conv2d_0``, ``matmul_0``, ... in
program order), with ``inputs=True`` the data those calls read (same names). The computation is otherwise
unchanged.
"""

from __future__ import annotations

from typing import Mapping

import tvm

from .dataflow import also_returning, main_block
from .quant_plan import plan_quantization, quantizable_layers
from .quant_policy import LayerSpec
from .registry import register_pass

ATTRIBUTE = "qc.exposed"


@register_pass("expose_activations")
def expose_activations(mod: tvm.IRModule, outputs: bool = False,
                       specs: Mapping[str, LayerSpec] | None = None, inputs: bool = False) -> tvm.IRModule:
    """Relax -> Relax: main also returns every quantization anchor (or, outputs=True, each layer's result;
    inputs=True, the data each layer reads)."""
    func = mod["main"]
    block = main_block(mod, "expose_activations")
    if inputs:
        named = [(name, call.args[0]) for name, call in quantizable_layers(func)]
    elif outputs:
        results = {binding.value: binding.var for binding in block.bindings}
        named = [(name, results[call]) for name, call in quantizable_layers(func)]
    else:
        plan = plan_quantization(func, specs or {})
        named = [(name, anchor.var) for name, anchor in plan.anchors.items()]
    exposed = also_returning(mod, [var for _, var in named], "expose_activations")
    return exposed.with_attr(ATTRIBUTE, [name for name, _ in named])
