"""Backends: turn a lowered Relax module into an executable for a target: LLVM code for this CPU, another
x86 CPU, or another architecture (``backends.targets``: which lowering a target gets, whether its code runs
here, the cross linker).

TVM's runtime sizes its thread pool once, from ``TVM_NUM_THREADS`` or else half the hardware threads (it
assumes hyper-threading: on a 2-core machine without it, one thread), and pins its threads to cores, which
on these virtual machines put both threads on one core in about half the processes (measured: ResNet-18
int8 at 17 ms instead of 9 ms in 2 of 4 fresh processes; 8.6-9.7 ms in 4 of 4 unpinned). Importing this
package sets ``TVM_NUM_THREADS`` to the cores this process may run on and ``TVM_BIND_THREADS`` to 0, unless
the user set them, before any kernel runs.

Where the CPU has AMX (``backends.x86_amx``), importing this package also asks Linux for the process's tile
state, without which the first tile instruction is fatal. An artifact whose code needs instructions this
CPU lacks (AMX, AVX-512 VNNI, AVX2, ...: ``targets.missing_features``) is refused at load time.
"""

import os

os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))
os.environ.setdefault("TVM_BIND_THREADS", "0")

from .cpu import TuningOptions, build, host_target, parse_target, tune  # noqa: E402
from .errors import BackendError  # noqa: E402
from .targets import linker, lowering_family, why_not_here  # noqa: E402
from .x86_amx import enable_amx  # noqa: E402

enable_amx()  # this process may run AMX tile kernels (Linux hands out the tile state only on request)

__all__ = ["BackendError", "enable_amx", "TuningOptions", "build", "host_target", "linker", "lowering_family",
           "parse_target", "tune", "why_not_here"]
