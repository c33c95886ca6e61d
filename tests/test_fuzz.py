"""The fuzzer's CI run: random small networks (tests/fuzz) through float, W8A8 and W4A8 and the per-op oracle.

``test_fuzz_ci`` runs the graphs of ``CI_SEEDS`` (those covering every op first) until ``CI_BUDGET_S`` of fuzzing (the runner starts
no graph it expects to finish past the budget) and asserts none failed; its report (failures with their rerun
command, the coverage table) is printed to the terminal in every run. The mutation
tests prove the run can fail: with a deliberate lowering bug (``passes.lower_integer.MUTATIONS``) a few CI
seeds chosen to contain the pattern it breaks must produce an oracle failure. The long run is
``benchmarks/fuzz.py``.
"""

from __future__ import annotations

import os

import pytest

from passes import lower_integer
from tests.fuzz.graphs import OP_TAGS, generate
from tests.fuzz.runner import run

CI_SEEDS = range(0, 200)
CI_BUDGET_S = float(os.environ.get("QC_FUZZ_BUDGET_S", "100"))  # the CI budget; benchmarks/fuzz.py is the long run


def test_generator_is_deterministic_and_covers_every_op():
    """Same seed, same graph; shapes consistent (PyTorch runs it); every listed op in >= 5% of 30 graphs."""
    graphs = [generate(seed) for seed in CI_SEEDS[:30]]
    assert [g.describe() for g in graphs] == [generate(seed).describe() for seed in CI_SEEDS[:30]]
    for g in graphs:
        assert tuple(g.module()(g.example_input()).shape) == g.shapes[-1]
        assert set(g.overrides) <= set(g.layers)
    counts = {tag: sum(tag in g.tags for g in graphs) for tag in OP_TAGS}
    assert not [tag for tag, n in counts.items() if n < 0.05 * len(graphs)], counts


def covering_order(seeds) -> list[int]:
    """``seeds`` reordered so that the first graphs use every tag (op, pattern, override kind) the seeds use at
    all (greedy set cover, ties to the lower seed), the rest in their order: a short budget still covers all."""
    tags = {seed: set(generate(seed).tags) for seed in seeds}
    missing, order = set().union(*tags.values()), []
    while missing:
        best = max((s for s in seeds if s not in order), key=lambda s: (len(tags[s] & missing), -s))
        order.append(best)
        missing -= tags[best]
    return order + [s for s in seeds if s not in order]


def test_fuzz_ci(tmp_path, capsys):
    """Every graph the budget allows passes; a failing one leaves its reproducer (ONNX + rerun command). The
    seeds run in ``covering_order``, so the first few graphs already use every listed op."""
    report = run(covering_order(CI_SEEDS), time_budget_s=CI_BUDGET_S, out_dir=tmp_path / "reproducers")
    with capsys.disabled():  # the graph count and coverage belong in every CI log
        print("\n" + report.format())
    assert len(report.results) >= 3, "the budget left room for fewer than 3 graphs"
    assert not report.failures, "\n".join(str(f) for f in report.failures)


def _mutation_finds_a_failure(mutation: str, seeds: list[int]) -> None:
    before = lower_integer.MUTATIONS
    report = run(seeds, stages=("w8a8",), mutation={mutation}, stop_at_first_failure=True)
    print("\n" + report.format())
    assert lower_integer.MUTATIONS is before, "the runner did not restore MUTATIONS"
    assert [f for f in report.failures if f.kind == "oracle"], f"mutation {mutation!r} went unnoticed"


@pytest.mark.parametrize("mutation,pattern", [("constant_add_fold", "pattern:act_const_add"),
                                              ("zero_point", None)])
def test_mutation_is_caught(mutation, pattern):
    """A constant add folded into a clamped accumulator (graphs ending in layer -> ReLU/clip -> + c: no anchor
    reads the add, so only the end-to-end SQNR / cosine floors see it), and one channel's folded zero point
    off by one (any layer reading an asymmetric tensor: an op out of its LSB bound) each fail within the first
    few CI seeds that have the pattern (the run stops at the first failure: a few seconds)."""
    seeds = [s for s in CI_SEEDS if pattern is None or pattern in generate(s).tags][:3]
    assert seeds, f"no CI seed has {pattern}"
    saved = lower_integer.MUTATIONS
    try:
        _mutation_finds_a_failure(mutation, seeds)
    finally:
        lower_integer.MUTATIONS = saved
