"""Real inputs that ship inside installed packages (nothing is downloaded): photos and sentences."""

from __future__ import annotations

import numpy as np


def photos() -> dict[str, np.ndarray]:
    """Return real photos as ``uint8`` HWC RGB arrays, keyed by name.

    Always ``chelsea`` (a tabby cat) and ``coffee`` (a cup of espresso) from ``skimage.data``; also
    ``china`` and ``flower`` from scikit-learn, and ``grace_hopper`` from matplotlib's sample data when
    those packages are installed (skipped silently otherwise).
    """
    import skimage.data

    images = {"chelsea": skimage.data.chelsea(), "coffee": skimage.data.coffee()}
    images.update(_sklearn_photos())
    images.update(_matplotlib_photos())
    return {name: np.ascontiguousarray(img, dtype=np.uint8) for name, img in images.items()}


def _sklearn_photos() -> dict[str, np.ndarray]:
    """scikit-learn's two sample photos, or nothing if scikit-learn is absent."""
    try:
        from sklearn.datasets import load_sample_image
    except ImportError:
        return {}
    return {name: load_sample_image(f"{name}.jpg") for name in ("china", "flower")}


def _matplotlib_photos() -> dict[str, np.ndarray]:
    """matplotlib's ``grace_hopper.jpg``, or nothing if matplotlib or its sample data is absent."""
    try:
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            return {"grace_hopper": np.asarray(Image.open(f).convert("RGB"))}
    except (ImportError, OSError, ValueError):
        return {}


_SENTENCES = (
    # The reference pair: cosine 0.7553 with all-MiniLM-L6-v2 in float.
    "A man is eating food.",
    "A man is eating a piece of bread.",
    # Near-paraphrase pairs.
    "A woman is playing the violin.",
    "A woman plays a violin on stage.",
    "The cat is sleeping on the windowsill.",
    "A cat naps in the sun by the window.",
    "The stock market fell sharply this morning.",
    "Share prices dropped steeply in early trading.",
    "He forgot his umbrella and got soaked in the rain.",
    "Caught in the rain without an umbrella, he got completely wet.",
    "The train to Berlin leaves at nine o'clock.",
    "The Berlin train departs at 9 am.",
    "Children are playing football in the park.",
    "Kids kick a ball around on the grass in the park.",
    # Unrelated sentences on varied topics.
    "Photosynthesis converts light energy into chemical energy.",
    "The committee postponed the vote until next Tuesday.",
    "Quantum computers use qubits instead of classical bits.",
    "She baked a chocolate cake for her grandmother's birthday.",
    "The old lighthouse has guided ships for over a century.",
    "Please remember to water the tomato plants every evening.",
    "A compiler translates source code into machine instructions.",
    "The orchestra tuned their instruments before the concert.",
    "Heavy snowfall closed the mountain pass for three days.",
    "My laptop battery drains faster than it used to.",
    "The museum opened a new exhibition of medieval maps.",
    "Is there a pharmacy open near the station tonight?",
)


def sentences() -> list[str]:
    """Return 26 hard-coded English sentences: the MiniLM reference pair, 6 paraphrase pairs, 12 unrelated."""
    return list(_SENTENCES)
