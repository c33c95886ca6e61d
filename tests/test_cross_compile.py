"""Cross-compilation: the pipeline is chosen from the target, another architecture's artifact is written
without running anything of it here, read by ``qc info`` and refused by ``load`` in one line."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import backends
import backends.targets
import tvm
import compiler
from compiler.pipeline import BACKEND_LOWERING, TARGET_INDEPENDENT_PASSES, default_passes
from models import mnist_cnn

from .conftest import AVX2_TARGET, qc

AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "num-cores": 2}
ELF_MACHINE = {62: "x86_64", 183: "aarch64"}


def _elf_machine(path) -> str:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    return ELF_MACHINE[struct.unpack_from("<H", header, 18)[0]]


def _digits(first: int, count: int) -> list[dict[str, np.ndarray]]:
    return [{"input": d[None]} for d in mnist_cnn.load_split()[0][first:first + count]]


def test_the_lowering_follows_the_targets_architecture_not_its_cpu_name():
    assert default_passes(AARCH64) == TARGET_INDEPENDENT_PASSES + BACKEND_LOWERING["generic"]
    assert default_passes(AVX2_TARGET) == default_passes() == compiler.DEFAULT_PASSES
    assert "pack_int8_layers" not in default_passes(AARCH64)
    assert backends.lowering_family(backends.parse_target({"kind": "llvm", "mtriple": "x86_64-linux-gnu",
                                                            "mcpu": "nehalem"})) == "x86"


@pytest.fixture(scope="module")
def aarch64_artifact(mnist_imported, tmp_path_factory):
    model = compiler.compile(mnist_imported, target=AARCH64, quantize="w8a8", calibration=_digits(0, 16))
    with pytest.raises(compiler.ArtifactError, match="code for aarch64"):
        model.run(_digits(100, 1)[0])  # compiled here, never run here
    return model.save(tmp_path_factory.mktemp("cross") / "mnist-aarch64")


def test_an_aarch64_artifact_is_written_read_by_info_and_refused_by_load(aarch64_artifact, tmp_path):
    assert _elf_machine(aarch64_artifact / "model.so") == "aarch64"
    manifest = json.loads((aarch64_artifact / "manifest.json").read_text())
    assert manifest["target"]["mtriple"] == "aarch64-linux-gnu"
    assert [s["pass"] for s in manifest["pipeline"]][-len(default_passes(AARCH64)):] == list(default_passes(AARCH64))
    assert manifest["quantization"]["layers"]  # calibrated on this machine in float, lowered to integers
    info = qc("info", str(aarch64_artifact))
    assert info.returncode == 0 and "aarch64-linux-gnu" in info.stdout, info.stderr
    with pytest.raises(compiler.ArtifactError, match=r"code for aarch64 .* does not run on this x86_64 machine"):
        compiler.load(aarch64_artifact)
    np.savez(tmp_path / "in.npz", input=_digits(100, 1)[0]["input"])
    for command in ("run", "profile"):
        result = qc(command, str(aarch64_artifact), "--input", str(tmp_path / "in.npz"))
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "code for aarch64" in result.stderr


def test_the_generic_lowering_gives_the_x86_lowerings_integers(mnist_imported):
    """What aarch64 gets (TVM's loop nests, no packed kernels) built for this CPU: the same bits as the
    x86 kernels, so the cross-compiled integer model computes what the oracle checked here."""
    host = backends.host_target(2)
    samples = _digits(0, 16)
    packed = compiler.compile(mnist_imported, quantize="w8a8", calibration=samples, target=host)
    generic = compiler.compile(mnist_imported, quantize="w8a8", calibration=samples, target=host,
                               passes=list(TARGET_INDEPENDENT_PASSES + BACKEND_LOWERING["generic"]))
    for sample in _digits(100, 20):
        np.testing.assert_array_equal(generic.run(sample)["output_0"], packed.run(sample)["output_0"])


def test_what_would_run_the_targets_code_here_is_refused_in_one_line(mnist_imported, tmp_path):
    with pytest.raises(compiler.CompilerError, match="the oracle runs the compiled code on this machine"):
        compiler.compile(mnist_imported, target=AARCH64, quantize="w8a8", calibration=_digits(0, 4), oracle=True)
    with pytest.raises(backends.BackendError, match="cannot tune for this target"):
        compiler.compile(mnist_imported, target=AARCH64, tune_trials=4, work_dir=tmp_path / "tuning")
    result = qc("compile", "mnist-cnn", "-o", str(tmp_path / "x"), "--target", json.dumps(AARCH64),
                "--tune-trials", "4", "--work-dir", str(tmp_path / "tuning"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "cannot tune" in result.stderr
    assert not (tmp_path / "x").exists()


def test_another_cpu_name_alone_is_no_mismatch(mnist_imported, tmp_path):
    """An artifact built for ``haswell`` (AVX2, no AVX-512) uses features this x86 machine has: it loads and
    runs here in a fresh process, with the outputs of the in-memory model."""
    model = compiler.compile(mnist_imported, target=AVX2_TARGET)
    sample = _digits(100, 1)[0]
    runs_here = not backends.targets.missing_features(AVX2_TARGET)
    expected = model.run(sample)["output_0"] if runs_here else None
    model.save(tmp_path / "haswell")
    np.savez(tmp_path / "in.npz", **sample)
    result = qc("run", str(tmp_path / "haswell"), "--input", str(tmp_path / "in.npz"), "--output",
                str(tmp_path / "out.npz"))
    if not runs_here:  # an x86 CPU older than haswell: refused, in one line
        assert result.returncode == 2 and "which this machine lacks" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_array_equal(out["output_0"], expected)


@pytest.mark.skipif(not backends.targets.cpu_flags() or backends.targets.host_arch() != "x86_64",
                    reason="reads /proc/cpuinfo of an x86_64 Linux machine")
def test_the_host_targets_kernel_features_are_the_cpus_not_its_models(monkeypatch):
    """LLVM names a guest's CPU after a model; the host target takes each kernel feature from what the CPU
    reports (an ``emeraldrapids`` guest here hides the AMX tiles its model has), so host code always runs."""
    from tvm.target.codegen import target_has_features

    host = backends.targets.host_target(1)
    for feature, flag in backends.targets._CPUINFO_FLAG.items():
        assert bool(target_has_features(feature, host)) == (flag in backends.targets.cpu_flags()), feature
    assert backends.targets.why_not_here(host) is None
    # a CPU reporting no AVX-512 under a model name that has it gets a target without it, and vice versa
    monkeypatch.setattr(backends.targets, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert backends.targets._host_corrections(tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})) == [
        "-avx512vnni", "-avx512vbmi", "-avx512bw", "-avx512f"]
    monkeypatch.setattr(backends.targets, "cpu_flags", lambda: frozenset({"avx2", "fma", "amx_tile", "amx_int8"}))
    assert backends.targets._host_corrections(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})) == [
        "+amx-int8", "+amx-tile"]
