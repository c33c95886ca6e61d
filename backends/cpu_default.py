"""Default CPU schedules for the kernels nobody scheduled: both cores and vector lanes instead of plain loops.

Legalized Relax kernels are single-threaded scalar loop nests, a fused one a loop nest and a full-size buffer
per op. Without tuning, ``schedule_defaults`` first inlines each elementwise block into the blocks that read
it (not into reductions), then gives every remaining top-level block two cheap, always-legal changes:

- the outer loops in parallel (the spatial loops in front of the innermost one, fused), when the block
  does enough work to pay for waking the thread pool (``MIN_PARALLEL_WORK`` iterations);
- vector lanes for the innermost spatial loop: vectorized in TIR whole when its extent is at most 16 or a
  power of two up to 64, else split by its largest power-of-two divisor (8 to 64; LLVM assembles
  odd-sized strided vectors byte by byte). A reduction block whose last spatial index
  is the last index of every input that depends on it (a matmul's output column), or whose reduction is a
  small window (pooling, at most 49 taps: strided reads, which LLVM turns into shuffles), first moves its
  reduction loops outside that index; other reductions (softmax's row sums) keep their reduction innermost.

Each step is tried and skipped when TIR refuses it, so a block keeps whatever subset applies; results are
unchanged (no reassociation of float sums: the reduction order per output element is the same). MetaSchedule
tuning replaces these schedules with measured ones (``backends.cpu.tune``).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import s_tir
from tvm.tirx.analysis import undefined_vars

MIN_PARALLEL_WORK = 1 << 14
LANES = 16
MAX_LANES, MIN_LANES = 64, 8  # vector widths: powers of two from 8 to 64
MAX_WINDOW = 49  # taps of a pooling window (7x7) below which a reduction may go outside the lanes
SPATIAL, REDUCE = 0, 2  # IterVar kinds


def schedule_defaults(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with every unscheduled PrimFunc given the default schedule (see the module docstring)."""
    result = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gvar, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc) or (func.attrs and func.attrs.get("tirx.is_scheduled")):
            continue
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        try:
            blocks = sch.get_child_blocks(sch.get_sblock("root"))
        except Exception:  # noqa: BLE001  (no root block: nothing to schedule)
            continue
        _inline_elementwise(sch, blocks)
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            _schedule_block(sch, block)
        result[gvar] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
    return result


def _inline_elementwise(sch: s_tir.Schedule, blocks) -> None:
    """Fold each elementwise block (no reduction) that one kernel's later blocks read into its readers, so a
    fused chain (a requantize: cast, multiply, add, shift, clamp ...) is one loop over registers instead of
    one loop and one full-size buffer per op. A block read by a reduction stays (recomputing it per reduced
    element would multiply its work), as does one TIR refuses to inline (the kernel's output)."""
    for block in blocks[:-1]:
        node = sch.get(block)
        if any(int(iv.iter_type) != SPATIAL for iv in node.iter_vars):
            continue
        readers = sch.get_consumers(block)
        if any(any(int(iv.iter_type) == REDUCE for iv in sch.get(r).iter_vars) for r in readers):
            continue
        _try(sch.compute_inline, block)


def _schedule_block(sch: s_tir.Schedule, block) -> None:
    loops = sch.get_loops(block)
    node = sch.get(block)
    kinds = [int(iv.iter_type) for iv in node.iter_vars]
    if not loops or len(loops) != len(kinds) or any(k not in (SPATIAL, REDUCE) for k in kinds):
        return
    spatial = [loop for loop, kind in zip(loops, kinds) if kind == SPATIAL]
    reduce = [loop for loop, kind in zip(loops, kinds) if kind == REDUCE]
    if not spatial:
        return
    work = int(np.prod([_extent(sch, loop) for loop in loops]))
    lanes = spatial[-1]
    if reduce and not (_contiguous_in_last_spatial(node, kinds) or _window(sch, reduce)):
        lanes = None  # keep the reduction innermost (a row reduction)
    elif reduce:
        _try(sch.reorder, *spatial[:-1], *reduce, spatial[-1])
    outer = spatial[:-1] if lanes is not None else spatial
    if outer and work >= MIN_PARALLEL_WORK:
        fused = _try(sch.fuse, *outer) if len(outer) > 1 else outer[0]
        if fused is not None:
            _try(sch.parallel, fused)
    if lanes is None or any(str(r.source.dtype) == "bool" for r in list(node.reads) + list(node.writes)):
        return  # TVM 0.27 cannot vectorize bool buffers (stored as int8): "dtype mismatch on BufferStore"
    extent = _extent(sch, lanes)
    width = extent & -extent  # the largest power of two dividing it: LLVM scalarizes odd-sized strided vectors
    if extent <= LANES or (extent <= MAX_LANES and width == extent):
        _try(sch.vectorize, lanes)
    elif width >= MIN_LANES:
        width = min(width, MAX_LANES)
        split = _try(sch.split, lanes, [None, width])
        if split is not None:
            _try(sch.vectorize, split[1])


def _window(sch, reduce) -> bool:
    """A small sliding-window reduction (pooling: at most ``MAX_WINDOW`` taps), which may run with the
    output row in vector lanes around it even though its reads are strided."""
    return int(np.prod([_extent(sch, loop) for loop in reduce])) <= MAX_WINDOW


def _contiguous_in_last_spatial(node, kinds) -> bool:
    """Every read that depends on the last spatial iter var indexes its last dimension with exactly it."""
    last = [iv.var for iv, kind in zip(node.iter_vars, kinds) if kind == SPATIAL][-1]
    for region in node.reads:
        mins = [r.min for r in region.region]
        uses = [any(v.same_as(last) for v in undefined_vars(m)) for m in mins]
        if any(uses) and not (mins and mins[-1].same_as(last) and not any(uses[:-1])):
            return False
    return True


def _try(primitive, *args):
    try:
        return primitive(*args)
    except Exception:  # noqa: BLE001  (TIR refused: keep the block as it is)
        return None


def _extent(sch, loop) -> int:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tvm.tirx.IntImm) else 1
