"""A seeded graph fuzzer for the quantizing compiler: random small PyTorch networks (``graphs``), each compiled
in float and quantized (W8A8, W4A8 with random per-layer overrides) and checked against PyTorch and the per-op
oracle (``runner``). ``tests/test_fuzz.py`` is the CI run, ``benchmarks/fuzz.py`` the long one."""
