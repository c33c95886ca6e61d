"""task_buffers: scratch buffers of a parallel loop allocated once per task, not once per iteration.

A packed kernel's tile (the int32 accumulators a tile's epilogue reads back, a channel's padded image) is a
buffer allocated inside the parallel loop over tiles. TVM keeps an allocation under 1 KiB on the stack and
makes every other one a ``TVMBackendAllocWorkspace`` / ``TVMBackendFreeWorkspace`` pair, run on every
iteration: 672 pairs per call of EfficientNet-Lite0's 3x3/2 depthwise layer (a 1792-byte tile), 28% of its
time (perf, one thread); Lite0 has about twenty such kernels. This TIR pass, run after TVM's pipeline and
before the host lowering that makes those calls, gives the loop ``tasks`` iterations, each one allocation
and a serial run of the old iterations.

Requires: lowered TIR (flat ``AllocBuffer`` statements in a parallel ``For``'s body) of a CPU target.
Guarantees: every parallel loop of N > ``tasks`` iterations whose body allocates a buffer TVM puts on the
heap (1 KiB or more) becomes a parallel loop of ``tasks`` iterations (``tasks``: the target's cores, at most
N), each allocating the body's buffers once and running ceil(N / tasks) consecutive old iterations
(the last ones guarded by ``i < N``); the loop variable is bound to the old iteration's index, so the body
is unchanged. TVM's runtime gives each thread one contiguous range of a parallel loop's iterations, so with
as many threads as cores each thread runs the iterations it ran before.
Numerics: unchanged. An iteration never reads what another wrote in its scratch buffers (each allocation
was uninitialized per iteration before).
"""

from __future__ import annotations

import math

import tvm
from tvm import tirx
from tvm_ffi.structural import structural_map

STACK_LIMIT = 1024  # bytes: TVM's kMaxStackAlloca (smaller constant allocations are stack arrays)


def _tasks(func: tirx.PrimFunc) -> int:
    """One task per core: TVM's own split of the loop over its threads (four per core left two threads 16
    and 12 of a 28-iteration loop: ResNet-18's fp32 28x28 convolutions 1.11x)."""
    target = func.attrs.get("target") if func.attrs is not None else None
    return max(1, int(target.attrs.get("num-cores", 1)) if target is not None else 1)


def _hoisted(loop: tirx.For, tasks: int) -> tirx.For:
    body = loop.body
    statements = list(body.seq) if isinstance(body, tirx.SeqStmt) else [body]
    allocations = [s for s in statements if isinstance(s, tirx.AllocBuffer)]
    extent = loop.extent
    if (not any(_on_the_heap(a.buffer) for a in allocations) or not isinstance(extent, tirx.IntImm)
            or int(extent) <= tasks or not _starts_at_zero(loop)):
        return loop
    count = int(extent)
    per_task = -(-count // tasks)
    tasks = -(-count // per_task)
    rest = [s for s in statements if not isinstance(s, tirx.AllocBuffer)]
    dtype = loop.loop_var.ty
    task, step = tirx.Var(f"{loop.loop_var.name}_task", dtype), tirx.Var(f"{loop.loop_var.name}_step", dtype)
    index = task * tirx.const(per_task, dtype) + step
    iteration = rest[0] if len(rest) == 1 else tirx.SeqStmt(rest)
    if tasks * per_task != count:
        iteration = tirx.IfThenElse(loop.loop_var < tirx.const(count, dtype), iteration, None)
    serial = tirx.For(step, tirx.const(0, dtype), tirx.const(per_task, dtype), tirx.ForKind.SERIAL,
                      tirx.SeqStmt([tirx.Bind(loop.loop_var, index), iteration]))
    return tirx.For(task, tirx.const(0, dtype), tirx.const(tasks, dtype), tirx.ForKind.PARALLEL,
                    tirx.SeqStmt([*allocations, serial]), annotations=loop.annotations)


def _on_the_heap(buffer) -> bool:
    """Whether TVM makes ``buffer`` a workspace (1 KiB or more, or not of constant size), not a stack array."""
    if not all(isinstance(d, tirx.IntImm) for d in buffer.shape):
        return True
    elements = math.prod(int(d) for d in buffer.shape)
    return elements * tvm.runtime.DataType(buffer.dtype).bits // 8 >= STACK_LIMIT


def _starts_at_zero(loop: tirx.For) -> bool:
    return isinstance(loop.min, tirx.IntImm) and int(loop.min) == 0


def task_buffers_pass() -> tvm.transform.Pass:
    @tirx.transform.prim_func_pass(opt_level=0, name="qc.TaskBuffers")
    def _pass(func, mod, ctx):
        tasks = _tasks(func)

        def rewrite(loop):
            return _hoisted(loop, tasks) if loop.kind == tirx.ForKind.PARALLEL else loop

        return func.with_body(structural_map(func.body, [(tirx.For, rewrite)]))

    return _pass
