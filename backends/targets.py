"""Which machine a target is for: its architecture, the lowering it gets, whether it runs here, how to link it.

    arch(target)            "x86_64", "aarch64", ...: from the target's ``mtriple`` (the host's when absent)
    lowering_family(target) "x86" (the packed int8 / float kernels of ``backends.x86_packed``) or "generic"
    host_target()           this machine's CPU as LLVM names it, with its cores, corrected to the kernel features
                            the CPU reports (a guest's CPU name can claim AMX the hypervisor hides, or hide it)
    missing_features(t)     the instruction-set features the kernels choose by that ``t`` has and this CPU lacks
    why_not_here(target)    None when code built for ``target`` runs on this machine, else a one-line reason
    linker(target)          what ``export_library`` links with: the host's C compiler for this architecture,
                            ``zig cc -target ARCH-linux-gnu`` (the ``ziglang`` wheel) for another one

Choices read the target's kind, triple and CPU features, never its CPU name: an artifact built for
``haswell`` runs here, one built for ``aarch64-linux-gnu`` or needing AVX-512 VNNI on a CPU without it does not.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import Any, Callable

import tvm
from tvm.target import Target

from .errors import BackendError
from .x86_amx import cpu_flags, has_amx

_ARCH_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64", "i686": "i386"}
X86_ARCHES = ("x86_64", "i386")


def _normal(name: str) -> str:
    name = name.lower()
    return _ARCH_ALIASES.get(name, name)


def host_arch() -> str:
    return _normal(platform.machine())


def triple(target: Target) -> str:
    """The target's LLVM triple (the host's when it names none)."""
    return str(target.attrs.get("mtriple", "") or tvm.target.codegen.llvm_get_system_triple())


def arch(target: Target) -> str:
    """The target's architecture, normalized (``x86_64``, ``aarch64``, ``riscv64``, ...)."""
    return _normal(triple(target).split("-")[0])


def host_target(num_cores: int | None = None) -> Target:
    """An LLVM target for this machine's CPU (``mcpu`` as LLVM names it) using ``num_cores`` threads, with
    each of ``KERNEL_FEATURES`` switched on or off to match what the CPU reports in ``/proc/cpuinfo``: LLVM
    names a virtual machine's CPU after a model, and the model's features need not be the guest's (an
    ``emeraldrapids`` guest without AMX tiles here, a ``rocketlake`` name for a Sapphire Rapids guest with
    them elsewhere)."""
    cores = num_cores or len(os.sched_getaffinity(0))
    spec: dict[str, Any] = {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": cores}
    mattr = _host_corrections(Target(spec))
    if mattr:
        spec["mattr"] = mattr
    return Target(spec)


_CPUINFO_FLAG = {"amx-int8": "amx_int8", "amx-tile": "amx_tile", "avx512vnni": "avx512_vnni",
                 "avx512vbmi": "avx512vbmi", "avx512bw": "avx512bw", "avx512f": "avx512f", "avx2": "avx2", "fma": "fma"}


def _host_corrections(named: Target) -> list[str]:
    """``+feature`` / ``-feature`` for each kernel feature where the CPU LLVM names and ``/proc/cpuinfo``
    disagree (none off x86 Linux, where there is no ``/proc/cpuinfo`` to read)."""
    from tvm.target.codegen import target_has_features

    flags = cpu_flags()
    if not flags or host_arch() not in X86_ARCHES:
        return []
    fixes = []
    for feature in KERNEL_FEATURES:
        claimed, present = bool(target_has_features(feature, named)), _CPUINFO_FLAG[feature] in flags
        if claimed != present:
            fixes.append(("+" if present else "-") + feature)
    return fixes


KERNEL_FEATURES = ("amx-int8", "amx-tile", "avx512vnni", "avx512vbmi", "avx512bw", "avx512f", "avx2", "fma")
"""The instruction-set features qc's x86 kernels are chosen by: code built with one runs only where it exists."""


def missing_features(target: Target) -> list[str]:
    """The ``KERNEL_FEATURES`` of ``target`` that this machine lacks (AMX also needs Linux to grant the
    tile state, ``enable_amx``); empty for non-x86 or non-LLVM targets, which this machine does not run."""
    from tvm.target.codegen import target_has_features

    from .x86_amx import enable_amx

    if target.kind.name != "llvm" or arch(target) not in X86_ARCHES or host_arch() not in X86_ARCHES:
        return []
    host = host_target(1)
    missing = [f for f in KERNEL_FEATURES if target_has_features(f, target) and not target_has_features(f, host)]
    if has_amx(target) and not missing and not enable_amx():
        missing.append("amx tile state (Linux refused arch_prctl)")
    return missing


def lowering_family(target: Target) -> str:
    """``"x86"`` for an LLVM target of an x86 CPU (any features: the packed kernels choose their instructions
    from them), else ``"generic"`` (TVM's legalized loop nests with default schedules)."""
    return "x86" if target.kind.name == "llvm" and arch(target) in X86_ARCHES else "generic"


def why_not_here(target: Target) -> str | None:
    """None when this machine runs code built for ``target``; else why not, in one line."""
    if target.kind.name != "llvm":
        return f"code for a {target.kind.name} target does not run here (this machine runs CPU code only)"
    built, here = arch(target), host_arch()
    if built != here:
        return f"code for {built} ({triple(target)}) does not run on this {here} machine"
    missing = missing_features(target)
    if missing:
        return (f"code for CPU {target.attrs.get('mcpu', '?')!r} uses {', '.join(missing)}, "
                "which this machine lacks")
    return None


def linker(target: Target) -> Callable[..., Any] | None:
    """The ``fcompile`` for ``export_library``: None (TVM's default, the host compiler) for this architecture,
    else a cross link by ``zig cc``."""
    built = arch(target)
    if built == host_arch():
        return None
    if not any(part.startswith("linux") for part in triple(target).split("-")[1:]):
        raise BackendError(f"no cross toolchain for {triple(target)}: qc links Linux shared libraries only")
    try:
        import ziglang  # noqa: F401  (the wheel ships the zig binary)
    except ImportError:
        raise BackendError(f"linking for {built} needs the ziglang package (pip install ziglang); "
                           "scripts/setup.sh installs it") from None
    zig_triple = f"{'x86' if built == 'i386' else built}-linux-gnu"

    def zig_cc(output: str, objects: list[str], options: list[str] | None = None, **_: Any) -> None:
        command = [sys.executable, "-m", "ziglang", "cc", "-shared", "-fPIC", "-target", zig_triple,
                   "-o", output, *objects, *(options or [])]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise BackendError(f"zig cc could not link the {built} library: {detail}")

    zig_cc.output_format = "so"
    return zig_cc
