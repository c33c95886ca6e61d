"""MetaSchedule tuning, with one tiny budget: results unchanged, database kept and reused."""

from __future__ import annotations

import numpy as np

import compiler


def test_tuned_build_matches_untuned_and_reuses_its_database(mnist_onnx, mnist_artifact, tmp_path):
    work_dir = tmp_path / "tuning"
    tuned = compiler.compile(mnist_onnx, tune_trials=4, work_dir=work_dir)
    assert (work_dir / "database_tuning_record.json").stat().st_size > 0
    x = np.random.default_rng(1).standard_normal((1, 1, 28, 28)).astype(np.float32)
    untuned = compiler.load(mnist_artifact).run(x)["output_0"]
    np.testing.assert_allclose(tuned.run(x)["output_0"], untuned, rtol=1e-5, atol=1e-5)
    records = (work_dir / "database_tuning_record.json").read_text()
    again = compiler.compile(mnist_onnx, tune_trials=4, work_dir=work_dir)  # every kernel already tuned
    assert (work_dir / "database_tuning_record.json").read_text() == records
    np.testing.assert_allclose(again.run(x)["output_0"], untuned, rtol=1e-5, atol=1e-5)
