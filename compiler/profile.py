"""Where a compiled model's time goes: per-kernel time, share, operations and fraction of this CPU's peak.

    report = compiler.profile(model, inputs, repeat=20)      # a CompiledModel or an artifact path
    print(report.text())

Every call the Relax VM makes (a kernel, or a runtime builtin such as ``vm.builtin.alloc_tensor``) is timed
through the VM's instrument hook over ``repeat`` inferences after ``warmup`` ones; a row's time is the median
over the inferences of its summed calls in one inference. The end-to-end time is the median of as many
uninstrumented inferences, each run just before an instrumented one (a shared host drifts within seconds;
alternating keeps both in the same state), so the rows' sum against it shows the time outside calls and
what the hook's measured cost misses. The hook's own cost (about 1.1 us + 0.09 us per argument a call here,
the Python callback and its arguments' conversion) falls inside each timed window: it is measured in the
same process, around empty kernels taking as many arguments as each row's calls, and taken off the rows
(``hook_ms`` says how much).

Operations per kernel come from the manifest (``kernel_info``, written at compile time from the kernels'
TIR with TVM's ``estimate_tir_flops``: a multiply-add counts two); an integer kernel (one reading int8 or
uint8 buffers) is measured against the int8 peak (VNNI, else AVX2), a float one against the fp32 FMA peak,
both measured in the same process (``backends.peak``). Where the CPU has AMX, its tile peak is measured and
printed too; the integer kernels' fractions stay against the vector peak (a kernel on tiles can pass 100%). Artifacts compiled before ``kernel_info`` existed get
times and shares only.

Each integer layer's kernel carries the layer's name through fusion (``lower_integer`` names the accumulator
after the plan's layer, ``pack_int8_layers`` names the kernel after it, TVM's fusion joins the names:
``fused_conv2d_3_u8i8_cast_add_...``), so a row names its layer (``conv2d_3``, as ``qc report`` and the
policy's overrides do) by name, never by call order. A float model's layer kernels are named the same way
(``pack_float_layers``: ``fused_conv2d_3_f32_add``); other float kernels carry only the ops TVM's fusion
named.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import relax, s_tir, te

from passes.packed_layouts import OPS

from .errors import CompilerError

INTEGER_DTYPES = ("int8", "uint8")
LAYER_IN_KERNEL = re.compile(r"(?:^|_)((?:conv2d|matmul)_\d+)_(?:u8i8|u8i4|f32)")
RUNTIME_PREFIX = "vm.builtin."


def kernel_info(mod: tvm.IRModule) -> dict[str, dict[str, Any]]:
    """Per PrimFunc of ``mod``: its operation count, argument shapes and whether it is an integer kernel."""
    from tvm.s_tir.analysis import estimate_tir_flops

    info = {}
    for gvar, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        buffers = [p for p in func.params if hasattr(p, "shape")]  # TVM 0.27: a PrimFunc's params are buffers
        ops = _declared_ops(func)
        if ops is None:
            try:
                ops = float(estimate_tir_flops(tvm.IRModule({"main": func})))
            except Exception:  # noqa: BLE001  (a loop TVM cannot count: time and share only)
                ops = None
        info[gvar.name_hint] = {
            "ops": ops,
            "args": [f"{b.dtype}[{'x'.join(str(int(d)) if isinstance(d, tvm.tirx.IntImm) else str(d) for d in b.shape)}]"
                     for b in buffers],
            "integer": any(str(b.dtype) in INTEGER_DTYPES for b in buffers),
            "float": any(str(b.dtype).startswith(("float", "bfloat")) for b in buffers),
            "layer": layer_of(gvar.name_hint),
        }
    return info


def _declared_ops(func: tvm.tirx.PrimFunc) -> float | None:
    """The operations a packed kernel's blocks declare (``packed_layouts.OPS``: 2 x MACs of the real outputs),
    None when none does. TVM's estimate would also count the lanes that pad the pixels or columns to a
    multiple of 16 (64 for a 7x7 image's 49 pixels: 31% more) and so overstate GOP/s."""
    try:
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
    except Exception:  # noqa: BLE001  (no root block)
        return None
    declared = [int(sch.get(b).annotations[OPS]) for b in blocks if OPS in sch.get(b).annotations]
    return float(sum(declared)) if declared else None


def layer_of(kernel: str) -> str | None:
    """The quantized layer a kernel computes (``conv2d_3``), read from its name; None for other kernels."""
    found = LAYER_IN_KERNEL.search(kernel)
    return found.group(1) if found else None


@dataclass(frozen=True)
class KernelRow:
    """One kernel (or runtime builtin): its time per inference and, where known, its speed."""

    name: str
    calls: int  # per inference
    ms: float  # median per inference
    share: float  # of the rows' sum
    kind: str  # "int8", "fp32", "int32" (wider integers only: no peak fraction) or "runtime"
    layer: str | None  # the quantized layer it computes (``conv2d_3``), from its name
    args: list[str]
    gops: float | None
    peak_fraction: float | None


@dataclass(frozen=True)
class Profile:
    """The rows, slowest first, with the end-to-end median and the peaks they are measured against."""

    rows: list[KernelRow]
    total_ms: float  # end-to-end median, uninstrumented
    kernels_ms: float  # the rows' sum
    repeat: int
    int8_peak_gops: float | None
    fp32_peak_gflops: float
    amx_peak_gops: float | None = None  # tile kernels' ceiling, where the CPU has AMX (printed, not divided by)
    hook_ms: float = 0.0  # the instrument hook's own cost per inference, measured and taken off the rows

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, limit: int | None = 25) -> str:
        """A table of the slowest ``limit`` rows (all with None) and the totals."""
        lines = [f"{'ms':>8s} {'share':>6s} {'calls':>5s} {'GOP/s':>7s} {'peak':>5s}  {'kind':7s} {'layer':10s} "
                 "kernel (arguments)"]
        for row in self.rows[:limit]:
            gops = "" if row.gops is None else f"{row.gops:7.1f}"
            peak = "" if row.peak_fraction is None else f"{row.peak_fraction:5.0%}"
            lines.append(f"{row.ms:8.3f} {row.share:6.1%} {row.calls:5d} {gops:>7s} {peak:>5s}  {row.kind:7s} "
                         f"{row.layer or '':10s} {row.name} ({', '.join(row.args)})")
        if limit is not None and len(self.rows) > limit:
            rest = self.rows[limit:]
            lines.append(f"{sum(r.ms for r in rest):8.3f} {sum(r.share for r in rest):6.1%}        "
                         f"({len(rest)} more rows)")
        peaks = f"int8 {self.int8_peak_gops} GOP/s, fp32 {self.fp32_peak_gflops} GFLOP/s"
        if self.amx_peak_gops:
            peaks += f" (int8 on AMX tiles {self.amx_peak_gops} GOP/s)"
        lines.append(f"kernels sum {self.kernels_ms:.3f} ms (net of the hook's own {self.hook_ms:.3f} ms); "
                     f"end to end {self.total_ms:.3f} ms (median of "
                     f"{self.repeat}); peaks {peaks}")
        return "\n".join(lines)


def profile(model: Any, inputs: Any = None, *, repeat: int = 20, warmup: int = 3) -> Profile:
    """Profile ``model`` (a ``CompiledModel`` or an artifact path) on ``inputs`` (as ``CompiledModel.run``
    takes them; None: zeros of the input shapes)."""
    from backends.peak import measure_peak

    from .executable import CompiledModel, load

    if repeat < 1 or warmup < 0:
        raise CompilerError(f"repeat must be >= 1 and warmup >= 0, got repeat={repeat}, warmup={warmup}")
    if isinstance(model, (str, Path)):
        model = load(model)
    if not isinstance(model, CompiledModel):
        raise CompilerError(f"profile takes a CompiledModel or an artifact path, not {type(model).__name__}")
    if inputs is None:
        inputs = [np.zeros(spec.shape, spec.dtype) for spec in model.inputs]
    arrays = model.prepare(inputs)
    total, per_call = _timed_rounds(model, arrays, repeat, warmup)
    peak = measure_peak()
    info = model.manifest.get("kernel_info") or {}
    floor = _hook_floor({args for _, _, args in per_call.values()})
    hook = {name: calls * floor[args] for name, (_, calls, args) in per_call.items()}
    medians = {name: max(0.0, float(np.median(times)) - hook[name]) for name, (times, _, _) in per_call.items()}
    kernels_s = sum(medians.values())
    rows = []
    for name, seconds in sorted(medians.items(), key=lambda item: -item[1]):
        calls = per_call[name][1]
        known = info.get(name, {})
        kind = "runtime" if name.startswith(RUNTIME_PREFIX) else "int8" if known.get("integer") else \
            "fp32" if known.get("float", True) else "int32"  # int32 / int64 only: neither peak applies
        gops = known["ops"] * calls / seconds / 1e9 if known.get("ops") and seconds > 0 else None
        ceiling = peak.int8_gops if kind == "int8" else peak.fp32_gflops if kind == "fp32" else None
        fraction = gops / ceiling if gops is not None and ceiling else None
        rows.append(KernelRow(name, calls, seconds * 1e3, seconds / kernels_s if kernels_s else 0.0, kind,
                              layer_of(name), list(known.get("args", [])), gops, fraction))
    return Profile(rows, float(np.median(total)) * 1e3, kernels_s * 1e3, repeat, peak.int8_gops,
                   peak.fp32_gflops, peak.amx_int8_gops, sum(hook.values()) * 1e3)


class _CallTimer:
    """A VM instrument: per called name, its summed seconds since ``clear``, its calls and their arguments."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.arguments: dict[str, int] = {}

    def __call__(self, func, name, before_run, ret_value, *args) -> None:
        if before_run:
            self.started[name] = time.perf_counter()
        else:
            self.seconds[name] += time.perf_counter() - self.started[name]
            self.calls[name] += 1
            self.arguments[name] = len(args)

    def clear(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def _timed_rounds(model, arrays, repeat: int,
                  warmup: int) -> tuple[list[float], dict[str, tuple[list[float], int, int]]]:
    """``repeat`` rounds of one uninstrumented inference (its seconds) then one through the hook (per called
    name: its summed seconds in that inference, its calls per inference and their arguments). Alternating
    the two keeps the end-to-end median and the rows in the same machine state: a shared host drifts 10-30%
    within seconds."""
    vm = relax.VirtualMachine(model._library, tvm.cpu())
    timer = _CallTimer()
    vm.set_instrument(timer)
    instrumented = vm["main"]
    for _ in range(warmup):
        model.call(arrays)
    instrumented(*arrays)  # warm-up through the hook
    total: list[float] = []
    seconds: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeat):
        started = time.perf_counter()
        model.call(arrays)
        total.append(time.perf_counter() - started)
        timer.clear()
        instrumented(*arrays)
        for name, value in timer.seconds.items():
            seconds[name].append(value)
    return total, {name: (values, timer.calls[name], timer.arguments[name]) for name, values in seconds.items()}


def _hook_floor(argument_counts: set[int], calls: int = 10, rounds: int = 30) -> dict[int, float]:
    """Seconds the instrument hook measures around a call that does no work, per argument count: the median
    over ``rounds`` inferences of a VM calling ``calls`` times an empty kernel (one 16-byte copy) that takes
    that many arguments, through the same hook as ``_timed_rounds``."""
    counts = sorted(argument_counts)
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((16,), "int8"))
    with builder.function("main", [x]):
        results = []
        for count in counts:
            inputs = [te.placeholder((16,), "int8", name=f"in{i}") for i in range(max(count - 1, 1))]
            out = te.compute((16,), lambda i: inputs[0][i], name="out")
            name = f"empty_{count}"
            kernel = builder.add_func(te.create_prim_func([*inputs, out]).with_attr("global_symbol", name), name)
            for _ in range(calls):
                results.append(builder.emit(relax.call_tir(kernel, [x] * len(inputs),
                                                           relax.TensorType((16,), "int8"))))
        builder.emit_func_output(relax.Tuple(results))
    vm = relax.VirtualMachine(tvm.compile(builder.get(), target="llvm"), tvm.cpu())
    timer = _CallTimer()
    vm.set_instrument(timer)
    x_array = tvm.runtime.tensor(np.zeros(16, "int8"))
    seconds: dict[int, list[float]] = defaultdict(list)
    for round_ in range(rounds + 1):
        timer.clear()
        vm["main"](x_array)
        for count in counts if round_ else ():  # the first round warms up
            seconds[count].append(timer.seconds[f"empty_{count}"] / calls)
    return {count: float(np.median(values)) for count, values in seconds.items()}
