"""Backends: turn a lowered Relax module into an executable for a target (today: the host CPU via LLVM)."""

from .cpu import TuningOptions, build, host_target, parse_target, tune
from .errors import BackendError

__all__ = ["BackendError", "TuningOptions", "build", "host_target", "parse_target", "tune"]
