"""backends/task_buffers: a parallel loop's heap scratch buffers allocated once per task, not per iteration."""

import numpy as np
import pytest
import tvm
from tvm import tirx
from tvm.script import tirx as T
from tvm_ffi.structural import structural_map

from backends.task_buffers import task_buffers_pass
from backends.x86_high_product import tir_pipeline

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64", "num-cores": 2})  # a task per core


def _reversed_rows(rows: int, width: int):
    """b[i, j] = 2 * a[i, width - 1 - j] + 1 through a scratch row per parallel iteration (``width`` int32:
    on the heap from 256 on, TVM's 1 KiB limit)."""

    @T.prim_func
    def main(a: T.Buffer((rows, width), "int32"), b: T.Buffer((rows, width), "int32")):
        for i in T.parallel(rows):
            scratch = T.alloc_buffer((width,), "int32")
            for j in range(width):
                scratch[j] = a[i, j] * 2
            for j in range(width):
                b[i, j] = scratch[width - 1 - j] + 1

    return tvm.IRModule({"main": main.with_attr("target", TARGET)})


def _parallel_loops(func) -> list:
    found = []
    structural_map(func.body, [(tirx.For, lambda loop: found.append(loop) or loop)])
    return [loop for loop in found if loop.kind == tirx.ForKind.PARALLEL]


@pytest.mark.parametrize("rows, width, tasks", [(40, 512, 2), (13, 512, 2), (40, 128, None), (2, 512, None)],
                         ids=["40 rows: 2 tasks of 20", "13 rows: 2 tasks of 7, the last guarded",
                              "a 512-byte scratch: on the stack, untouched", "2 rows: no more than the tasks, untouched"])
def test_heap_scratch_buffers_are_allocated_once_per_task_and_results_stay_exact(rows, width, tasks):
    mod = _reversed_rows(rows, width)
    (loop,) = _parallel_loops(task_buffers_pass()(mod)["main"])
    assert int(loop.extent) == (tasks or rows)
    if tasks:  # the allocation heads the task, the old iterations run inside it
        assert isinstance(loop.body.seq[0], tirx.AllocBuffer)
        assert not any(isinstance(s, tirx.AllocBuffer) for s in loop.body.seq[1:])
    a = np.random.default_rng(rows).integers(-1000, 1000, (rows, width)).astype(np.int32)
    b = tvm.runtime.empty((rows, width), "int32")
    tvm.compile(mod, target=TARGET, tir_pipeline=tir_pipeline(TARGET))(tvm.runtime.tensor(a), b)
    np.testing.assert_array_equal(b.numpy(), 2 * a[:, ::-1] + 1)
