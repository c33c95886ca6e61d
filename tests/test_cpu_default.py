"""Default CPU schedules (backends/cpu_default.py): a fused elementwise chain runs as one loop, and the
schedule changes no result."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import s_tir, te

from backends import host_target
from backends.cpu_default import schedule_defaults


def _blocks(func: tvm.tirx.PrimFunc) -> set[str]:
    sch = s_tir.Schedule(func)
    return {sch.get(block).name_hint for block in sch.get_child_blocks(sch.get_sblock("root"))}


def test_elementwise_chain_is_inlined_except_where_a_reduction_reads_it():
    x = te.placeholder((64, 128), "int32", "x")
    widened = te.compute(x.shape, lambda i, j: x[i, j].astype("int64") * 3, name="widened")
    shifted = te.compute(x.shape, lambda i, j: (widened[i, j] + 7) >> 2, name="shifted")
    k = te.reduce_axis((0, 128), "k")
    total = te.compute((64,), lambda i: te.sum(shifted[i, k], axis=k), name="total")
    out = te.compute(x.shape, lambda i, j: (shifted[i, j] * 5 - total[i]).astype("int32"), name="out")
    func = te.create_prim_func([x, out]).with_attr("global_symbol", "main")
    scheduled = schedule_defaults(tvm.IRModule({"main": func}))
    # "widened" folds into "shifted"; "shifted" feeds a reduction, so it keeps its own loop (and buffer)
    assert _blocks(scheduled["main"]) == {"shifted", "total", "out"}
    data = np.random.default_rng(0).integers(-2**20, 2**20, (64, 128)).astype(np.int32)
    results = []
    for mod in (tvm.IRModule({"main": func}), scheduled):
        library = tvm.compile(mod, target=host_target(2))
        result = tvm.runtime.tensor(np.zeros((64, 128), np.int32))
        library["main"](tvm.runtime.tensor(data), result)
        results.append(result.numpy())
    np.testing.assert_array_equal(results[0], results[1])
    shifted_ref = (data.astype(np.int64) * 3 + 7) >> 2
    np.testing.assert_array_equal(results[1], (shifted_ref * 5 - shifted_ref.sum(axis=1, keepdims=True))
                                  .astype(np.int32))
