"""Write calibration sets for the bundled models as .npz files (samples stacked on a leading axis).

    .venv/bin/python benchmarks/calibration_sets.py build/calib

mnist-cnn.npz: the first 64 training digits. efficientnet-lite0.npz: the 5 bundled photos and their mirror
images (no other images ship offline). minilm.npz: the first 8 bundled sentences, tokenized to 128.
Use them with `qc compile MODEL --quantize w8a8 --calib build/calib/MODEL.npz`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from models import data, efficientnet_lite0, minilm, mnist_cnn


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "build/calib")
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "mnist-cnn.npz", input=mnist_cnn.load_split()[0][:64])
    photos = np.concatenate([efficientnet_lite0.preprocess(p) for p in data.photos().values()])
    np.savez(out / "efficientnet-lite0.npz", input=np.concatenate([photos, photos[..., ::-1]]))
    tokens = minilm.tokenize(data.sentences()[:8])
    np.savez(out / "minilm.npz", **tokens)
    for path in sorted(out.glob("*.npz")):
        print(path, {k: v.shape for k, v in np.load(path).items()})


if __name__ == "__main__":
    main()
