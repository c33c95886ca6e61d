"""The bundled data: the held-out image set is large, fixed, and shares no photo with calibration."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from models import data


def _thumbnail(image: np.ndarray) -> np.ndarray:
    grey = np.asarray(Image.fromarray(image).convert("L").resize((32, 32), Image.BILINEAR), dtype=np.float64)
    return (grey - grey.mean()) / (grey.std() + 1e-9)


def test_the_held_out_set_is_200_views_of_10_photos_none_used_for_calibration():
    views = data.evaluation_views()
    photos = {key.split("/")[0] for key in views}
    assert len(views) >= 200 and len(photos) >= 10
    assert all(v.shape == (256, 256, 3) and v.dtype == np.uint8 for v in views.values())
    calibration = data.photos()
    assert not photos & set(calibration)
    for name, image in data.evaluation_photos().items():  # not the same picture under another name
        for other, calibrated in calibration.items():
            similarity = np.mean(_thumbnail(image) * _thumbnail(calibrated))
            assert similarity < 0.9, (name, other, similarity)


def test_the_committed_views_lie_inside_their_photos():
    entries = json.loads(data.EVALUATION_VIEWS_FILE.read_text())["views"]
    sources = data.evaluation_photos()
    assert len({e["key"] for e in entries}) == len(entries)
    for entry in entries:
        left, top, width, height = entry["box"]
        rows, cols = sources[entry["photo"]].shape[:2]
        assert 0 <= left and left + width <= cols and 0 <= top and top + height <= rows
        assert 0.25 * rows * cols * 0.95 <= width * height <= 0.70 * rows * cols * 1.05


def test_the_held_out_sentences_are_48_none_used_for_calibration():
    held_out, bundled = data.evaluation_sentences(), data.sentences()
    assert len(held_out) >= 40 and len(set(held_out)) == len(held_out)
    assert not set(held_out) & set(bundled)  # calibration reads bundled[:8]
    normalized = lambda s: "".join(c for c in s.lower() if c.isalnum())  # noqa: E731
    assert not {normalized(s) for s in held_out} & {normalized(s) for s in bundled}
    words = [len(s.split()) for s in held_out]
    assert max(words) - min(words) >= 6  # varied lengths
    assert sum(s.endswith("?") for s in held_out) >= 2


def test_embedding_agreement_is_one_for_the_reference_and_drops_with_noise():
    import pytest

    from models.minilm import embedding_agreement

    rng = np.random.default_rng(0)
    reference = rng.standard_normal((12, 384))
    same = embedding_agreement(reference, reference * 3.0)  # cosines ignore the norm
    assert same["cosine_min"] > 0.999999 and same["pair_spearman"] > 0.999999
    noisy = embedding_agreement(reference, reference + 0.5 * rng.standard_normal(reference.shape))
    assert 0.8 < noisy["cosine_mean"] < 0.95 and noisy["pair_spearman"] < 0.99
    with pytest.raises(ValueError, match="one shape"):
        embedding_agreement(reference, reference[:, :10])
