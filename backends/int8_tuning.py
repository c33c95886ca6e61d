"""Tuning the int8 kernels' knobs: measure candidate register tiles per kernel, keep the best in a database.

The int8 schedules of ``backends.x86_packed`` have one knob, the register tile (``Knobs``: rows x blocks of 16
lanes). ``tune_int8`` builds each packed kernel of a module alone with each candidate tile, times it on
zero-filled arguments (the kernels' work does not depend on the values) and records the fastest in
``work_dir/int8_knobs.json``, keyed by target and by the kernel's structural hash, so a later compile of any
model with the same kernel reuses it. Kernels are taken heaviest first (the default tile's time), each with
the same number of candidates (``candidates``: the default first, then the most accumulators first, each as
``fit_tile`` makes it on that kernel, none twice), until the trial budget is spent. Kernels without a
register tile (depthwise, and matmuls / convolutions on AMX tiles) are not tuned. The WIDE kernels of CPUs
without VNNI (``passes.packed_layouts.WIDE``) are searched the same way, within their register budget
(``x86_packed.max_accumulators``). MetaSchedule tunes the other kernels (``backends.cpu.tune``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tvm
import tvm_ffi

from tvm import s_tir

from passes.packed_layouts import INT8, WIDE, Packing

from .x86_packed import (
    Knobs,
    default_knobs,
    fit_tile,
    kernel_kind,
    max_accumulators,
    register_tile_extents,
    schedule_packed_kernels,
)

CANDIDATES = tuple(Knobs(rows, blocks) for rows in (1, 2, 4, 6, 8, 12, 16) for blocks in (1, 2, 3, 4, 6)
                   if rows * blocks <= 28)


def candidates(target: tvm.target.Target, extents: tuple[int, int] | None = None,
               packing: Packing = INT8) -> list[Knobs]:
    """The tiles worth trying on ``target``, most likely winners first: the default, then the others whose
    accumulators fit its vector registers, most accumulators first (each loads its operands once for more
    multiply-adds), nearest the default in shape among equals. For a kernel of ``extents`` (rows, lane
    blocks) each tile is the one ``fit_tile`` makes of it there, and a tile that another already became is
    not tried again."""
    default = default_knobs(target, packing)
    limit = max_accumulators(target, packing)
    likely = sorted((k for k in CANDIDATES if k != default and k.rows * k.blocks <= limit),
                    key=lambda k: (-k.rows * k.blocks, abs(k.rows - default.rows) + abs(k.blocks - default.blocks)))
    if extents is None:
        return [default] + likely
    tiles, seen = [], set()
    for knobs in [default] + likely:
        fitted = fit_tile(knobs, *extents)
        if fitted not in seen:
            seen.add(fitted)
            tiles.append(Knobs(*fitted))
    return tiles


DATABASE = "int8_knobs.json"
MIN_PER_KERNEL = 2
Progress = Callable[[str, int, int], None]


class KnobDatabase:
    """The best tile per (target, kernel), as JSON in a work directory (written atomically after each kernel)."""

    def __init__(self, work_dir: str | Path):
        self.path = Path(work_dir) / DATABASE
        self.records: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def lookup(self, target: tvm.target.Target, func: tvm.tirx.PrimFunc) -> Knobs | None:
        record = self.records.get(str(target), {}).get(kernel_key(func))
        return None if record is None else Knobs(record["rows"], record["blocks"])

    def store(self, target: tvm.target.Target, func: tvm.tirx.PrimFunc, knobs: Knobs, seconds: float,
              tried: int) -> None:
        self.records.setdefault(str(target), {})[kernel_key(func)] = {
            "rows": knobs.rows, "blocks": knobs.blocks, "us": round(seconds * 1e6, 2), "candidates": tried}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.records, indent=1, sort_keys=True))
        tmp.replace(self.path)


def kernel_key(func: tvm.tirx.PrimFunc) -> str:
    return f"{int(tvm_ffi.structural_hash(func.without_attr('global_symbol'))) & (2**64 - 1):016x}"


def tune_int8(mod: tvm.IRModule, target: tvm.target.Target, database: KnobDatabase, trials: int,
              progress: Progress | None = None) -> dict:
    """Search tiles for the packed int8 kernels of ``mod`` missing from ``database``; returns counts. (The
    float kernels of ``pack_float_layers`` keep their default tiles.)

    The budget is split evenly over the missing kernels, at least ``MIN_PER_KERNEL`` candidates each (so a
    small budget tunes the heaviest few), the default tile always among them."""
    packings = {kernel_key(f): (f, _integer_packing(f)) for f in mod.functions.values()
                if isinstance(f, tvm.tirx.PrimFunc)}
    extents = {key: register_tile_extents(f, target) for key, (f, packing) in packings.items() if packing}
    kernels = {key: packings[key][0] for key, tile in extents.items() if tile is not None}  # depthwise, AMX: none
    pending = {key: f for key, f in kernels.items() if database.lookup(target, f) is None}
    report = {"int8_kernels": len(kernels), "int8_reused": len(kernels) - len(pending), "int8_tuned": 0,
              "int8_trials": 0}
    if trials <= 0 or not pending:
        return report
    tiles = {key: candidates(target, extents[key], packings[key][1]) for key in pending}
    per_kernel = min(max(len(t) for t in tiles.values()), max(MIN_PER_KERNEL, trials // len(pending)))
    default = {key: measure(func, target, tiles[key][0]) for key, func in pending.items()}
    chosen = sorted(pending, key=lambda k: -default[k])[: trials // per_kernel]
    for key in chosen:
        func = pending[key]
        results = [(default[key], tiles[key][0])]
        for knobs in tiles[key][1:per_kernel]:
            results.append((measure(func, target, knobs), knobs))
            if progress:
                progress(f"tuning int8 tile {knobs.rows}x{knobs.blocks}", report["int8_trials"] + len(results),
                         per_kernel * len(chosen))
        seconds, best = min(results, key=lambda r: r[0])
        database.store(target, func, best, seconds, len(results))
        report["int8_tuned"] += 1
        report["int8_trials"] += len(results)
    return report


def _integer_packing(func: tvm.tirx.PrimFunc) -> Packing | None:
    """The packing of an integer packed kernel (INT8, or WIDE for CPUs without VNNI), else None."""
    found = kernel_kind(s_tir.Schedule(tvm.IRModule({"main": func})))
    return found[1] if found is not None and found[1] in (INT8, WIDE) else None


def measure(func: tvm.tirx.PrimFunc, target: tvm.target.Target, knobs: Knobs, repeat: int = 5) -> float:
    """Median seconds of one call of ``func`` scheduled with ``knobs`` (inf when the tile does not apply)."""
    try:
        scheduled = schedule_packed_kernels(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                                          target, knobs)
        lib = tvm.compile(scheduled, target=target)
    except Exception:  # noqa: BLE001  (a tile the kernel's shape cannot take)
        return float("inf")
    args = [tvm.runtime.tensor(np.zeros([int(d) for d in p.shape], str(p.dtype))) for p in func.params]
    started = time.perf_counter()
    lib["main"](*args)  # warm-up, and a guard against pathological tiles
    once = time.perf_counter() - started
    number = max(1, int(0.02 / max(once, 1e-6)))
    return float(np.median(lib.mod.time_evaluator("main", tvm.cpu(), number=number, repeat=repeat)(*args).results))
