"""Real inputs that ship inside installed packages (nothing is downloaded): photos and sentences."""

from __future__ import annotations

import json
from pathlib import Path

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


_EVALUATION_SENTENCES = (
    # Paraphrase pairs (sentence 2k and 2k + 1), for the rank correlation of pair similarities.
    "The flight was delayed by two hours because of fog.",
    "Fog held the plane on the ground for an extra two hours.",
    "She is learning to speak Japanese before her trip to Tokyo.",
    "Before travelling to Tokyo, she is studying Japanese.",
    "The doctor told him to drink more water and rest.",
    "His physician advised plenty of fluids and some rest.",
    "Our team won the championship after a tense final match.",
    "After a nervous final, our side took the title.",
    "The bakery on the corner sells fresh bread every morning.",
    "Every morning the corner bakery has freshly baked loaves.",
    "Scientists discovered a new species of frog in the rainforest.",
    "A previously unknown frog was found by researchers in the jungle.",
    "Turn off the lights when you leave the room.",
    "Please switch the lights off as you go out.",
    "The river flooded the village after days of heavy rain.",
    "Days of downpour caused the river to overflow into the village.",
    "He repaired the bicycle's flat tire with a patch kit.",
    "Using a patch kit, he fixed the punctured bike tyre.",
    "The price of coffee has risen sharply this year.",
    "Coffee has become much more expensive over the past twelve months.",
    "The students listened carefully to the guest lecture on volcanoes.",
    "A visiting speaker gave the class a talk about volcanoes.",
    "I can't find my keys anywhere in the house.",
    "My keys have gone missing somewhere at home.",
    # Varied sentences: topics, lengths, questions, numbers and names.
    "The Pacific Ocean covers about one third of the Earth's surface.",
    "Add two cups of flour and stir until the batter is smooth.",
    "Why does the moon look larger near the horizon?",
    "The new bridge will connect the island to the mainland by 2030.",
    "A sudden gust of wind knocked over the market stalls.",
    "The algorithm sorts a million numbers in under a second.",
    "Grandfather tells the same story about the war every Christmas.",
    "Vaccines train the immune system to recognise a virus.",
    "The referee showed the defender a red card in the last minute.",
    "Where can I buy a ticket for the night bus?",
    "The painting was sold at auction for twelve million dollars.",
    "Bees communicate the location of flowers by dancing.",
    "The hotel room had a view of the harbour and the old fortress.",
    "Interest rates were left unchanged at the central bank's meeting.",
    "She wrote her first novel in a small cabin by the lake.",
    "The printer is out of paper again.",
    "Glaciers in the Alps have shrunk dramatically since 1900.",
    "The toddler refused to eat anything green at dinner.",
    "Electric cars are cheaper to run but still expensive to buy.",
    "The library stays open until midnight during exam week.",
    "A thick layer of dust covered the piano in the attic.",
    "Migrating geese fly south in a V-shaped formation.",
    "The software update fixed the bug that crashed the app on startup.",
    "They hiked for six hours to reach the summit before sunset.",
)


def evaluation_sentences() -> list[str]:
    """48 hard-coded English sentences for evaluating a quantized MiniLM, none of them in ``sentences()``
    (whose first 8 calibrate it): 12 paraphrase pairs (sentences 2k, 2k + 1 for k < 12), then 24 sentences on
    varied topics, of varied length and form (questions, numbers, names)."""
    return list(_EVALUATION_SENTENCES)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel RGB mean and standard deviation of ImageNet (on pixels scaled to [0, 1])."""


def center_crop(image: np.ndarray, size: int = 224, resize_shorter: int = 256) -> np.ndarray:
    """A ``uint8`` HWC RGB image resized (shorter side to ``resize_shorter``, PIL bicubic; an image already
    that size is not resampled) and center-cropped to ``size`` x ``size``: float32 HWC pixels in [0, 255]."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 RGB image, got {image.dtype} {image.shape}")
    pil = Image.fromarray(image)
    scale = resize_shorter / min(pil.size)
    pil = pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.BICUBIC)
    left, top = (pil.width - size) // 2, (pil.height - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size)), dtype=np.float32)


def imagenet_preprocess(image: np.ndarray, size: int = 224, resize_shorter: int = 256) -> np.ndarray:
    """Turn a ``uint8`` HWC RGB image into a ``(1, 3, size, size)`` float32 input, torchvision style:
    :func:`center_crop`, then ``(x / 255 - IMAGENET_MEAN) / IMAGENET_STD``."""
    pixels = center_crop(image, size, resize_shorter) / 255.0
    pixels = (pixels - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)


def held_out_views(count: int = 8, size: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Return ``count`` random crops of :func:`photos` as ``uint8`` ``size`` x ``size`` RGB, for *evaluation*.

    Calibration and evaluation must not share inputs. The convention of the tests and benchmarks is to
    calibrate image models on every photo of :func:`photos` through the model's ``preprocess`` (resize
    the shorter side to 256, center crop) and on the horizontal mirrors of those. These views are
    different inputs: each is a crop covering 25-70% of a photo's area at a random position, aspect ratio
    in [3/4, 4/3], resized (PIL bicubic) to ``size`` x ``size``, and mirrored with probability 1/2; the
    photos are taken in turn. At the default ``size=256`` a model's ``preprocess`` (``imagenet_preprocess``
    or ``efficientnet_lite0.preprocess``) takes a view as it is (no resampling) and center-crops 224.
    Keys are ``"<photo>/<index>"``; the same ``seed`` gives the same views.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = list(photos().items())
    views = {}
    for index in range(count):
        name, image = sources[index % len(sources)]
        left, top, crop_w, crop_h = _random_crop(rng, *image.shape[:2])
        view = Image.fromarray(image[top:top + crop_h, left:left + crop_w]).resize((size, size), Image.BICUBIC)
        view = np.asarray(view)
        if rng.random() < 0.5:
            view = view[:, ::-1]
        views[f"{name}/{index}"] = np.ascontiguousarray(view, dtype=np.uint8)
    return views


EVALUATION_PHOTOS = ("astronaut", "rocket", "motorcycle", "hubble_deep_field", "immunohistochemistry", "retina",
                     "camera", "coins", "moon", "clock")
"""The photos of the held-out image set: scikit-image's, none of them in :func:`photos` (which calibrates
image models); the four greyscale ones (camera, coins, moon, clock) are given three equal channels."""


def evaluation_photos() -> dict[str, np.ndarray]:
    """The ``EVALUATION_PHOTOS`` as ``uint8`` HWC RGB arrays (scikit-image ships every one)."""
    import skimage.data

    loaders = {"motorcycle": lambda: skimage.data.stereo_motorcycle()[0], "clock": skimage.data.clock}
    images = {}
    for name in EVALUATION_PHOTOS:
        image = loaders.get(name, getattr(skimage.data, name, None))()
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        images[name] = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    return images


EVALUATION_VIEWS_FILE = Path(__file__).with_name("evaluation_views.json")
"""The committed held-out set: 20 views of each of the ten ``EVALUATION_PHOTOS`` (photo, crop box, mirror)."""


def evaluation_views(size: int = 256) -> dict[str, np.ndarray]:
    """The 200 held-out views of ``EVALUATION_VIEWS_FILE`` as ``uint8`` ``size`` x ``size`` RGB, keyed
    ``"<photo>/<index>"``: each crop resized with PIL bicubic and mirrored where the file says so. For
    evaluation only: no view, and no photo they come from, is among the calibration inputs."""
    from PIL import Image

    sources = evaluation_photos()
    views = {}
    for entry in json.loads(EVALUATION_VIEWS_FILE.read_text())["views"]:
        left, top, width, height = entry["box"]
        crop = sources[entry["photo"]][top:top + height, left:left + width]
        view = np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC))
        views[entry["key"]] = np.ascontiguousarray(view[:, ::-1] if entry["mirror"] else view, dtype=np.uint8)
    return views


def draw_evaluation_views(per_photo: int = 20, seed: int = 0) -> dict:
    """The content of ``EVALUATION_VIEWS_FILE``: ``per_photo`` crops of each evaluation photo covering
    25-70% of its area at a random position, aspect ratio in [3/4, 4/3], mirrored with probability 1/2
    (``python -c "import json, models.data as d; print(json.dumps(d.draw_evaluation_views(), indent=1))"``)."""
    rng = np.random.default_rng(seed)
    views = []
    for name, image in evaluation_photos().items():
        for index in range(per_photo):
            box = list(_random_crop(rng, *image.shape[:2]))
            views.append({"key": f"{name}/{index}", "photo": name, "box": box, "mirror": bool(rng.random() < 0.5)})
    return {"seed": seed, "per_photo": per_photo, "views": views}


def _random_crop(rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
    """(left, top, width, height) of a crop covering 25-70% of the area, aspect ratio in [3/4, 4/3]."""
    area = rng.uniform(0.25, 0.70) * height * width
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    crop_w = min(width, max(1, round((area * aspect) ** 0.5)))
    crop_h = min(height, max(1, round((area / aspect) ** 0.5)))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    return left, top, crop_w, crop_h


def statistics_images(count: int, seed: int = 0, size: int = 224) -> np.ndarray:
    """``count`` ImageNet-normalised ``(3, size, size)`` float32 crops of photos *outside* :func:`photos`.

    For models with random weights, whose BatchNorm running statistics are measured in train mode on
    these (see ``models.mobilenet_v3_small.randomize``): natural images keep every layer at a sane scale
    on photos, where white noise lets activations grow ~100x through the network. The sources are
    scikit-image's ``astronaut`` and ``rocket``, taken in turn, so these never coincide with calibration
    inputs or the held-out views of :func:`photos` that evaluate those models (the trained
    EfficientNet-Lite0's held-out set, :func:`evaluation_views`, uses these two photos among ten). Each crop is a random square of side between
    ``size`` and the shorter side, resized (PIL bilinear) to ``size``, mirrored with probability 1/2,
    then ``(x / 255 - IMAGENET_MEAN) / IMAGENET_STD``. Returns ``[count, 3, size, size]``.
    """
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = [skimage.data.astronaut(), skimage.data.rocket()]
    crops = []
    for index in range(count):
        image = sources[index % len(sources)]
        height, width = image.shape[:2]
        side = int(rng.integers(size, min(height, width) + 1))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side]))
        pixels = np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
        if rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        crops.append(((pixels - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(crops), dtype=np.float32)
