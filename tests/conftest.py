"""Shared fixtures: real models compiled once per test session (untuned, the fast path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm

import compiler
import models

os.environ.setdefault("TVM_NUM_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]


def max_rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: the figure the float compile must keep <= 1e-4."""
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


AVX2_TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})  # AVX2, no AVX-512
PLAIN_TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64", "num-cores": 2})  # SSE2 only


GUARD = 4096  # bytes checked after a kernel's output: nothing may be written past its end


def run_kernel(func, inputs: list[np.ndarray], out_shape, out_dtype: str, target) -> np.ndarray:
    """Build one packed kernel (``backends.x86_packed.build_kernel``) for ``target``, run it on ``inputs`` and
    return its output, which lies 64-byte aligned in a larger buffer whose bytes after it must stay untouched."""
    from backends.x86_packed import build_kernel

    size = int(np.prod(out_shape)) * np.dtype(out_dtype).itemsize
    memory = np.full(size + GUARD + 64, 0xA5, np.uint8)
    start = -memory.ctypes.data % 64  # TVM's kernels assume 64-byte aligned arguments
    out = memory[start:start + size].view(out_dtype).reshape(out_shape)
    args = [tvm.runtime.tensor(a) for a in inputs] + [tvm.runtime.from_dlpack(out)]
    build_kernel(func, target)["main"](*args)
    written_past = np.flatnonzero(memory[start + size:start + size + GUARD] != 0xA5)
    assert written_past.size == 0, f"kernel wrote {written_past.size} bytes past its output"
    return out.copy()


def qc(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process, as a user would (``env`` adds to this process's environment)."""
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=900, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def effnet_case():
    return models.get("efficientnet-lite0")


@pytest.fixture(scope="session")
def effnet(effnet_case):
    return compiler.compile(effnet_case.module, example_inputs=effnet_case.example_inputs,
                            input_names=effnet_case.input_names)


@pytest.fixture(scope="session")
def mnist_case():
    return models.get("mnist-cnn")


@pytest.fixture(scope="session")
def mnist_imported(mnist_case):
    """The MNIST CNN through the torch frontend (float Relax module, input named 'input')."""
    return compiler.import_model(mnist_case.module, example_inputs=mnist_case.example_inputs,
                                 input_names=mnist_case.input_names)


@pytest.fixture(scope="session")
def mnist_onnx(tmp_path_factory, mnist_case) -> Path:
    return models.export_onnx(mnist_case, tmp_path_factory.mktemp("mnist") / "mnist.onnx")


@pytest.fixture(scope="session")
def mnist_artifact(tmp_path_factory, mnist_onnx) -> Path:
    out = tmp_path_factory.mktemp("artifacts") / "mnist"
    compiler.compile(mnist_onnx).save(out)
    return out
