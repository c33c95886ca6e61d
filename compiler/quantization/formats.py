"""Number formats, simulated exactly in numpy: what a tensor becomes when stored in each format (not compile
targets: ``qc report --formats`` measures what each would cost a model in accuracy).

    y = simulate("mxfp4", x, axis=1)      # x rounded to MXFP4 along axis 1 (its blocks of 32), as float64

Formats (``FORMATS``), each a scale and an element format:

    int8, int4       symmetric integers, one scale per channel along ``axis`` (per tensor without one):
                     s = amax / (2^(b-1) - 1), y = s * clamp(round(x / s), -(2^(b-1) - 1), 2^(b-1) - 1)
    fp8_e4m3         OCP E4M3 (no infinities, max 448) and E5M2 (max 57344), one scale per channel as above
    fp8_e5m2         (s = amax / max), x / s rounded into the format, saturating at +-max
    mxint8, mxint4,  OCP Microscaling: a block of 32 consecutive elements along ``axis`` shares a power of two
    mxfp8_e4m3,      X = 2^(floor(log2(amax_block)) - emax_element) (E8M0: the exponent clamped to
    mxfp6_e2m3,      [-127, 127]; an all-zero block gets X = 1); each x / X is rounded into the element
    mxfp4            format and saturates at its largest magnitude. Elements: MXINT8 a two's-complement
                     byte with 6 fraction bits (+-127/64), MXINT4 a nibble with 2 (+-7/4; the OCP v1.0
                     spec lists no MXINT4: the block rule of MXINT8 at 4 bits, as the "INT vs FP" studies
                     use it), FP8 E4M3 (emax 8), FP6 E2M3 (emax 2, max 7.5), FP4 E2M1 (emax 2, max 6).

Two activation schemes of the outlier studies, int8 elements with weights per output channel as ``int8``
(dynamic: each scale taken from the tensor being stored, as the schemes run; matmuls only, a convolution's
input stays per tensor):

    int8_token       one scale per token (row) of a matmul's input instead of one per tensor
    llm_int8         LLM.int8() (Dettmers et al. 2022): the input's feature columns where any token reaches
                     |x| >= 6 (``OUTLIER_THRESHOLD``) stay float, with the weight rows they multiply; the rest
                     is per-token int8 (its scales from the rest alone)

Numerics: rounding is to nearest, ties to even, everywhere (``np.round`` on exact float64 quotients: every
scale here is a power of two or divides exactly enough that the quotient's rounding is the format's);
float elements are rounded by their own binade (``np.frexp``), subnormals below the format's smallest
normal exponent; integer elements are clamped symmetric (-127, not -128: the scale's sign symmetry). The
float element rounding is written here, not borrowed, and ``tests/test_formats.py`` checks it against
``ml_dtypes``' casts (float8_e4m3fn, float8_e5m2, float6_e2m3fn, float4_e2m1fn) value by value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CompilerError

MX_BLOCK = 32  # elements sharing one scale in the OCP MX formats
OUTLIER_THRESHOLD = 6.0  # LLM.int8()'s: an input feature reaching this magnitude is kept in float


@dataclass(frozen=True)
class FloatElement:
    """A binary floating-point element: ``mantissa`` fraction bits, smallest normal exponent ``emin``,
    largest magnitude ``max_value`` (saturation)."""

    mantissa: int
    emin: int
    max_value: float

    @property
    def emax(self) -> int:
        return int(np.floor(np.log2(self.max_value)))

    def round(self, x: np.ndarray) -> np.ndarray:
        """x rounded to the nearest element (ties to even), saturating at +-max_value."""
        x = np.asarray(x, np.float64)
        _, exponent = np.frexp(np.abs(x))  # |x| = m 2^exponent, m in [0.5, 1): binade exponent - 1
        binade = np.maximum(exponent - 1, self.emin)  # below the smallest normal: the subnormal spacing
        step = np.ldexp(1.0, binade - self.mantissa)
        return np.clip(np.round(x / step) * step, -self.max_value, self.max_value)


@dataclass(frozen=True)
class IntElement:
    """A two's-complement element of ``bits`` bits with ``fraction`` fraction bits, clamped symmetric."""

    bits: int
    fraction: int

    @property
    def max_value(self) -> float:
        return (2 ** (self.bits - 1) - 1) / 2**self.fraction

    @property
    def emax(self) -> int:
        return int(np.floor(np.log2(self.max_value)))

    def round(self, x: np.ndarray) -> np.ndarray:
        limit = 2 ** (self.bits - 1) - 1
        return np.clip(np.round(np.asarray(x, np.float64) * 2**self.fraction), -limit, limit) / 2**self.fraction


E4M3 = FloatElement(3, -6, 448.0)
E5M2 = FloatElement(2, -14, 57344.0)
E2M3 = FloatElement(3, 0, 7.5)
E2M1 = FloatElement(1, 0, 6.0)


@dataclass(frozen=True)
class Format:
    """An element format and how its scale is shared: ``block`` elements along the axis (MX, a power of
    two), or one scale per channel / tensor that maps the largest magnitude to the element's largest."""

    name: str
    element: FloatElement | IntElement
    block: int | None = None
    bits: int = 8
    per_token: bool = False  # a matmul input: one scale per token (row), not per tensor
    outlier_threshold: float | None = None  # LLM.int8(): input columns reaching it stay float

    def simulate(self, x: np.ndarray, axis: int | None = None) -> np.ndarray:
        """``x`` as stored in this format, in float64. Per-channel formats: one scale per index of ``axis``
        (per tensor where None); MX formats: blocks of ``block`` along ``axis`` (the last axis where None;
        a short last block is padded with zeros, which do not change its scale)."""
        x = np.asarray(x, np.float64)
        if self.block is None:
            amax = np.abs(x).max(initial=0.0) if axis is None else np.abs(x).max(
                axis=tuple(a for a in range(x.ndim) if a != axis % x.ndim), keepdims=True, initial=0.0)
            scale = np.where(amax > 0, amax / self.element.max_value, 1.0)
            return self.element.round(x / scale) * scale
        axis = -1 if axis is None else axis
        moved = np.moveaxis(x, axis, -1)
        length = moved.shape[-1]
        padded = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, -length % self.block)])
        blocks = padded.reshape(*padded.shape[:-1], -1, self.block)
        amax = np.abs(blocks).max(axis=-1, keepdims=True)
        _, exponent = np.frexp(amax)  # floor(log2(amax)) = exponent - 1 for amax > 0
        shared = np.where(amax > 0, np.clip(exponent - 1 - self.element.emax, -127, 127), 0)
        scale = np.ldexp(1.0, shared)
        rounded = (self.element.round(blocks / scale) * scale).reshape(padded.shape)[..., :length]
        return np.moveaxis(rounded, -1, axis)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("int8", IntElement(8, 0)),
    Format("int4", IntElement(4, 0), bits=4),
    Format("fp8_e4m3", E4M3),
    Format("fp8_e5m2", E5M2),
    Format("mxint8", IntElement(8, 6), MX_BLOCK),
    Format("mxfp8_e4m3", E4M3, MX_BLOCK),
    Format("mxfp6_e2m3", E2M3, MX_BLOCK, bits=6),
    Format("mxint4", IntElement(4, 2), MX_BLOCK, bits=4),
    Format("mxfp4", E2M1, MX_BLOCK, bits=4),
    Format("int8_token", IntElement(8, 0), per_token=True),
    Format("llm_int8", IntElement(8, 0), per_token=True, outlier_threshold=OUTLIER_THRESHOLD),
)}


def simulate(name: str, x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``x`` stored in format ``name`` (see the module docstring), in float64."""
    return get_format(name).simulate(x, axis)


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise CompilerError(f"unknown number format {name!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[name]


def sqnr_db(reference: np.ndarray, approximation: np.ndarray) -> float:
    """10 log10(|reference|^2 / |reference - approximation|^2); inf where they are equal."""
    reference = np.asarray(reference, np.float64)
    noise = float(np.sum((reference - np.asarray(approximation, np.float64)) ** 2))
    return float("inf") if noise == 0 else 10.0 * float(np.log10(max(float(np.sum(reference**2)), 1e-300) / noise))
