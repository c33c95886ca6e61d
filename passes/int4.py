"""4-bit integers stored two per byte. Not a pass: the storage format int4 weights use in artifacts, and
the integer kernels that read it.

Layout: element 2i in the low nibble and element 2i+1 in the high nibble of byte i (an odd count pads with
0), two's complement for signed values, as ONNX's INT4 and most int4 kernels store them. A weight keeps
this layout in the compiled library: ``conv2d_int4`` / ``matmul_int4`` unpack each nibble inside their
reduction loop, so fold_constant cannot expand it back to int8 (the kernel also reads the activations).
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


PACKED_ATTRIBUTE = "qc.int4"  # on a packed kernel's PrimFunc: what it computes, for the reference interpreter


def _nibble(packed, flat):
    """Sign-extended int32 value of 4-bit element ``flat`` of ``packed`` (TE expression)."""
    from tvm import tirx

    byte = packed[flat // 2].astype("int32")
    nibble = tirx.bitwise_and(tirx.shift_right(byte, (flat % 2) * 4), 15)
    return tirx.Select(nibble > INT4_MAX, nibble - 16, nibble)


def conv2d_int4(data, packed, weight_shape, strides, dilation, groups):
    """NCHW conv2d, no padding, of integer ``data`` with an OIHW int4 weight packed flat; int32 result."""
    from tvm import te

    out_c, in_per_group, kh, kw = weight_shape
    n, _, h, w = (int(d) for d in data.shape)
    (sh, sw), (dh, dw) = strides, dilation
    oh, ow = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1
    per_group = out_c // groups
    i, y, x = te.reduce_axis((0, in_per_group), "i"), te.reduce_axis((0, kh), "y"), te.reduce_axis((0, kw), "x")

    def compute(b, o, r, c):
        flat = ((o * in_per_group + i) * kh + y) * kw + x
        pixel = data[b, (o // per_group) * in_per_group + i, r * sh + y * dh, c * sw + x * dw].astype("int32")
        return te.sum(pixel * _nibble(packed, flat), axis=[i, y, x])

    return te.compute((n, out_c, oh, ow), compute, name="conv2d_int4")


def matmul_int4(data, packed, k_size, n_size):
    """``data[..., K] @ W[K, N]`` with W int4 packed flat (row-major); int32 result."""
    from tvm import te

    k = te.reduce_axis((0, k_size), "k")

    def compute(*index):
        pixel = data[tuple(index[:-1]) + (k,)].astype("int32")
        return te.sum(pixel * _nibble(packed, k * n_size + index[-1]), axis=k)

    return te.compute(tuple(data.shape[:-1]) + (n_size,), compute, name="matmul_int4")
