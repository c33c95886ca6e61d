"""MetaSchedule tuning, with one tiny budget: results unchanged, database kept and reused."""

from __future__ import annotations

import numpy as np

import compiler


def test_tuned_build_matches_untuned_and_reuses_its_database(mnist_onnx, mnist_artifact, tmp_path):
    work_dir = tmp_path / "tuning"
    x = np.random.default_rng(1).standard_normal((1, 1, 28, 28)).astype(np.float32)
    untuned = compiler.load(mnist_artifact).run(x)["output_0"]

    first = compiler.compile(mnist_onnx, tune_trials=4, work_dir=work_dir)
    report = first.manifest["tuning"]
    assert report["tuned"] == 1 and report["reused"] == 0 and report["untuned"] == report["kernels"] - 1
    np.testing.assert_allclose(first.run(x)["output_0"], untuned, rtol=1e-5, atol=1e-5)

    second = compiler.compile(mnist_onnx, tune_trials=4, work_dir=work_dir)  # the next-heaviest kernel
    assert second.manifest["tuning"]["reused"] == 1 and second.manifest["tuning"]["tuned"] == 1
    records = (work_dir / "database_tuning_record.json").read_text()

    applied = compiler.compile(mnist_onnx, work_dir=work_dir)  # no trials: apply the database only
    assert (work_dir / "database_tuning_record.json").read_text() == records
    np.testing.assert_allclose(applied.run(x)["output_0"], untuned, rtol=1e-5, atol=1e-5)
