"""4-bit integers stored two per byte. Not a pass: the storage format int4 weights use in artifacts.

Layout: element 2i in the low nibble and element 2i+1 in the high nibble of byte i (an odd count pads with
0), two's complement for signed values, as ONNX's INT4 and most int4 kernels store them.
"""

from __future__ import annotations

import numpy as np

INT4_MIN, INT4_MAX = -8, 7
UINT4_MAX = 15


def pack_int4(values: np.ndarray) -> np.ndarray:
    """Pack int values in [-8, 7] (or [0, 15] when unsigned) into a flat uint8 array, two per byte."""
    flat = np.asarray(values).ravel()
    if flat.size and (flat.min() < INT4_MIN or flat.max() > UINT4_MAX or (flat.min() < 0 and flat.max() > INT4_MAX)):
        raise ValueError(f"values span [{flat.min()}, {flat.max()}]: not 4-bit signed [-8, 7] or unsigned [0, 15]")
    nibbles = (flat.astype(np.int16) & 0xF).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return nibbles[0::2] | (nibbles[1::2] << 4)


def unpack_int4(packed: np.ndarray, count: int, signed: bool = True) -> np.ndarray:
    """The first ``count`` 4-bit values of ``packed`` as int8 (sign-extended when ``signed``)."""
    packed = np.asarray(packed, dtype=np.uint8).ravel()
    if count > 2 * packed.size:
        raise ValueError(f"{packed.size} bytes hold at most {2 * packed.size} values, asked for {count}")
    nibbles = np.empty(2 * packed.size, dtype=np.uint8)
    nibbles[0::2], nibbles[1::2] = packed & 0xF, packed >> 4
    values = nibbles[:count].astype(np.int8)
    return np.where(values > INT4_MAX, values - 16, values).astype(np.int8) if signed else values
