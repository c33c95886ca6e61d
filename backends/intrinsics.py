"""Import TVM's tensor intrinsics for CPU targets only.

``import tvm.s_tir.tensor_intrin`` registers the intrinsics of every target; on this machine that takes
about 68 s, 43 s of it for CUDA (measured: ``python -X importtime -c "import tvm.s_tir.tensor_intrin"``).
MetaSchedule imports it in every tuning context and in every builder worker, which made one tuning trial
cost over a minute. For CPU work we register only the intrinsics of the host's architecture family and
leave the others as empty modules in this process.
"""

from __future__ import annotations

import platform
import sys
import types

_PACKAGE = "tvm.s_tir.tensor_intrin"
_OTHER_TARGETS = ("cuda", "rocm", "hexagon", "metal")
_CPU_FAMILIES = {"x86": ("x86_64", "amd64", "i386", "i686"), "arm_cpu": ("aarch64", "arm64"),
                 "riscv_cpu": ("riscv64",)}


def import_cpu_intrinsics() -> None:
    """Register the host CPU's tensor intrinsics without paying for the GPU ones (no-op if already done)."""
    if _PACKAGE in sys.modules:
        return
    machine = platform.machine().lower()
    skipped = list(_OTHER_TARGETS) + [name for name, arches in _CPU_FAMILIES.items() if machine not in arches]
    for name in skipped:
        sys.modules.setdefault(f"{_PACKAGE}.{name}", types.ModuleType(f"{_PACKAGE}.{name}"))
    import tvm.s_tir.tensor_intrin  # noqa: F401  (now imports only the host family for real)
