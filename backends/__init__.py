"""Backends: turn a lowered Relax module into an executable for a target (today: the host CPU via LLVM).

TVM's runtime sizes its thread pool once, from ``TVM_NUM_THREADS`` or else half the hardware threads (it
assumes hyper-threading: on a 2-core machine without it, one thread). Importing this package sets
``TVM_NUM_THREADS`` to the cores this process may run on, unless the user set it, before any kernel runs.
"""

import os

os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))

from .cpu import TuningOptions, build, host_target, parse_target, tune  # noqa: E402
from .errors import BackendError  # noqa: E402

__all__ = ["BackendError", "TuningOptions", "build", "host_target", "parse_target", "tune"]
