"""An example plugin pass for qc: count the Relax operators of ``main`` before lowering.

Install with ``pip install -e examples/qc_plugin_example``; then ``qc passes`` lists ``op_histogram`` and a
pipeline spec can place it, e.g. in ``pipeline.toml``:

    [[insert]]
    pass = "op_histogram"
    after = "decompose_for_inference"
"""

from __future__ import annotations

from collections import Counter

import tvm
from tvm import relax

from passes import register_pass

ATTRIBUTE = "qc_plugin_example.op_histogram"


@register_pass("op_histogram")
def op_histogram(mod: tvm.IRModule, top: int = 0) -> tvm.IRModule:
    """Relax -> same Relax, plus module attribute op_histogram: {op name: count} of main's calls."""
    counts: Counter[str] = Counter()

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            counts[expr.op.name] += 1

    relax.analysis.post_order_visit(mod["main"], visit)
    selected = dict(counts.most_common(top or None))
    return mod.with_attr(ATTRIBUTE, selected)
