"""Passes: Relax IRModule -> IRModule transformations, each registered by name with its contract.

Built-in passes register on import; plugins register through ``@register_pass`` or the ``qc.passes``
entry-point group (see ``passes.registry``).
"""

from . import expose_activations, fold_batchnorm, tvm_builtin  # noqa: F401  (registers the passes)
from .registry import (
    ENTRY_POINT_GROUP,
    PassError,
    PassInfo,
    get_pass,
    register_pass,
    registered_passes,
)

__all__ = ["ENTRY_POINT_GROUP", "PassError", "PassInfo", "get_pass", "register_pass", "registered_passes"]
