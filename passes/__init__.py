"""Passes: Relax IRModule -> IRModule transformations, each registered by name with its contract.

Built-in passes register on import; plugins register through ``@register_pass`` or the ``qc.passes``
entry-point group (see ``passes.registry``).
"""

from . import (  # noqa: F401  (registers the passes)
    check_integer_only,
    elementwise_patterns,
    expose_activations,
    fast_math,
    fold_batchnorm,
    fuse_tables,
    insert_qdq,
    lower_integer,
    narrow_constants,
    pack_float_layers,
    pack_int8_layers,
    smooth_quant,
    tvm_builtin,
)
from .registry import (
    ENTRY_POINT_GROUP,
    PassError,
    PassInfo,
    get_pass,
    register_pass,
    registered_passes,
)

__all__ = ["ENTRY_POINT_GROUP", "PassError", "PassInfo", "get_pass", "register_pass", "registered_passes"]
