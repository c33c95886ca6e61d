"""TVM's own Relax passes used by the float pipeline, registered under short names.

Each entry wraps one ``tvm.relax.transform`` pass; its contract is the line registered with it.
Requires: a Relax IRModule whose ``main`` has static shapes. Guarantees: what each TVM pass guarantees.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .registry import register_pass

_BUILTINS = {
    "canonicalize_bindings": (relax.transform.CanonicalizeBindings,
                              "Relax -> Relax: drop trivial rebindings left by the importer"),
    "decompose_for_inference": (relax.transform.DecomposeOpsForInference,
                                "Relax -> Relax: batch_norm/layer_norm etc. become plain arithmetic"),
    "fold_constant": (relax.transform.FoldConstant,
                      "Relax -> Relax: evaluate subgraphs whose inputs are all constants"),
    "legalize_ops": (relax.transform.LegalizeOps,
                     "Relax ops -> calls to TIR PrimFuncs (every high-level op gets a loop nest)"),
    "annotate_op_pattern": (relax.transform.AnnotateTIROpPattern,
                            "TIR PrimFuncs get their fusion pattern kind (elemwise, injective, reduce, ...)"),
    "fuse_ops": (relax.transform.FuseOps,
                 "Relax -> Relax: group producer/consumer calls by pattern into fused subfunctions"),
    "fuse_tir": (relax.transform.FuseTIR,
                 "fused Relax subfunctions -> one TIR PrimFunc each (one kernel per group)"),
    "dead_code_elimination": (relax.transform.DeadCodeElimination,
                              "Relax -> Relax: drop unused bindings and functions"),
}


def _register(name: str, make_pass, contract: str) -> None:
    def run(mod: tvm.IRModule) -> tvm.IRModule:
        return make_pass()(mod)

    run.__name__ = name
    run.__doc__ = contract
    register_pass(name, contract=contract)(run)


for _name, (_make, _contract) in _BUILTINS.items():
    _register(_name, _make, _contract)
