"""expose_activations: make ``main`` also return the input of every quantizable layer, for calibration.

Requires: a float Relax module whose ``main`` is one dataflow block (as the importers produce), after
``fold_constant`` (so weights are constants) and before ``legalize_ops``.
Guarantees: ``main`` returns ``(original outputs..., x_0, ..., x_{n-1})`` where x_i is the data input of
the i-th quantizable call (``relax.nn.conv2d``, ``relax.matmul``) in program order; the layer
names (``conv2d_0``, ``matmul_0``, ...) are stored in the module attribute ``qc.exposed_layers``. With
``outputs=True`` the results of those calls are returned instead (for per-layer error reports). The
computation is otherwise unchanged.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .dataflow import function_attrs, main_block, with_main
from .registry import register_pass

QUANTIZABLE_OPS = {"relax.nn.conv2d": "conv2d", "relax.matmul": "matmul"}
ATTRIBUTE = "qc.exposed_layers"


def quantizable_layers(func: relax.Function) -> list[tuple[str, relax.Call]]:
    """``(layer name, call)`` for every conv2d / matmul with a constant weight, in program order."""
    layers: list[tuple[str, relax.Call]] = []
    seen: dict[str, int] = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            call = binding.value
            if isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and call.op.name in QUANTIZABLE_OPS:
                if isinstance(call.args[1], tvm.ir.expr.GenericConst):
                    kind = QUANTIZABLE_OPS[call.op.name]
                    layers.append((f"{kind}_{seen.get(kind, 0)}", call))
                    seen[kind] = seen.get(kind, 0) + 1
    return layers


@register_pass("expose_activations")
def expose_activations(mod: tvm.IRModule, outputs: bool = False) -> tvm.IRModule:
    """Relax -> Relax: main also returns the data input (or, with outputs=True, the result) of each conv2d/matmul."""
    func = mod["main"]
    block = main_block(mod, "expose_activations")
    layers = quantizable_layers(func)
    builder = relax.BlockBuilder()
    results = {binding.value: binding.var for binding in block.bindings}
    exposed = [results[call] if outputs else call.args[0] for _, call in layers]
    original = func.body.body
    returned = list(original.fields) if isinstance(original, relax.Tuple) else [original]
    with builder.function("main", func.params, attrs=function_attrs(func)):
        with builder.dataflow():
            for binding in block.bindings:
                builder.emit_normalized(binding)
            result = builder.emit_output(relax.Tuple(returned + exposed))
        builder.emit_func_output(result)
    return with_main(mod, builder).with_attr(ATTRIBUTE, [name for name, _ in layers])
