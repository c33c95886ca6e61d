"""The error of the fast exp / erf / tanh that ``passes/fast_math.py`` uses, against float64, on a dense grid.

    .venv/bin/python benchmarks/fast_math.py [--points 4194304]

Each function is compiled for this CPU from ``topi.fast_*`` and run on evenly spaced float32 points over the
range where float32 results are normal (erf [-6, 6], exp [-87, 88], tanh [-10, 10]); the figure is the largest
|approximation - exact| / |exact| (exact from numpy / scipy in float64).
"""

from __future__ import annotations

import argparse

import numpy as np
import tvm
from scipy.special import erf
from tvm import te, topi

from backends import host_target

CASES = {"erf": (topi.fast_erf, erf, -6.0, 6.0), "exp": (topi.fast_exp, np.exp, -87.0, 88.0),
         "tanh": (topi.fast_tanh, np.tanh, -10.0, 10.0)}


def max_relative_error(name: str, points: int) -> tuple[float, float]:
    """(largest relative error, the point where it occurs) of ``fast_<name>`` on ``points`` grid points."""
    fast, exact, low, high = CASES[name]
    x = te.placeholder((points,), "float32", "x")
    library = tvm.compile(te.create_prim_func([x, fast(x)]), target=host_target(1))
    grid = np.linspace(low, high, points, dtype=np.float32)
    out = tvm.runtime.tensor(np.zeros(points, np.float32))
    library["main"](tvm.runtime.tensor(grid), out)
    reference = exact(grid.astype(np.float64))
    relative = np.abs(out.numpy() - reference) / np.maximum(np.abs(reference), np.finfo(np.float32).tiny)
    return float(relative.max()), float(grid[relative.argmax()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1 << 22)
    args = parser.parse_args()
    for name in CASES:
        error, where = max_relative_error(name, args.points)
        print(f"fast_{name}: max relative error {error:.3g} (at x = {where:.6g}) on {args.points} points")


if __name__ == "__main__":
    main()
