"""elementwise_patterns: give the kernels marked elementwise their fusion pattern.

Requires: a legalized module after ``annotate_op_pattern`` and the folds after it, just before ``fuse_ops``.
Guarantees: every PrimFunc with ``fuse_tables.ELEMENTWISE_ATTRIBUTE`` has ``op_pattern`` kElemWise (0), which
``annotate_op_pattern`` cannot be told in advance (it recomputes a zero pattern, reading a table's gather as
opaque, and ``fold_constant`` labels the kernels again); ``fuse_ops`` then appends such a kernel to its
producer's epilogue. Nothing else changes.
Numerics: none (fusion only).
"""

from __future__ import annotations

import tvm

from .fuse_tables import ELEMENTWISE_ATTRIBUTE
from .registry import register_pass

ELEMENTWISE = 0  # relax's OpPatternKind kElemWise


@register_pass("elementwise_patterns")
def elementwise_patterns(mod: tvm.IRModule) -> tvm.IRModule:
    """Relax -> Relax: marked kernels' ``op_pattern`` set to kElemWise."""
    result = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gvar, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None and ELEMENTWISE_ATTRIBUTE in func.attrs:
            result[gvar] = func.with_attr("op_pattern", ELEMENTWISE)
    return result
