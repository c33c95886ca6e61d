"""4-bit weights in the packed int8 kernels: two reduction groups share each byte. Not a pass: the storage
format ``pack_int8_layers`` gives a layer whose int8 weight holds 4-bit values, and the unpacking its
kernels do.

The packed int8 kernels reduce in groups (``packed_layouts``: four for ``vpdpbusd``, two for the ``WIDE``
kernels of CPUs without VNNI). A 4-bit weight keeps its int8 layout, with two consecutive groups in one byte
lane: group 2j in the low nibble, group 2j + 1 in the high nibble (two's complement; an odd count of groups
is padded with a zero group). So one 64-byte load of a packed matmul weight unpacks into the two 16 x 4 int8
operands of two VNNI steps with three ALU ops, each value landing in the high half of its byte, i.e. as 16 w:

    odd group   b & 0xF0                    (vpandd)
    even group  b << 4                      (vpsllw and vpandd: x86 has no byte shift; where the CPU has
                                             GFNI, LLVM emits one vgf2p8affineqb instead)

The kernel's int32 sums are then 16 times the true ones, exactly, and its last stage shifts them back
(``>> 4``, exact: every term is a multiple of 16) before the fused epilogue sees them.
Numerics: exact while 16 x the layer's worst-case sum fits int32 (``packs_as_nibbles`` refuses a weight
where it might not; that layer keeps 8-bit storage).
"""

from __future__ import annotations

import numpy as np

INT4_MIN, INT4_MAX = -8, 7
SCALE = 16  # an unpacked value is SCALE * w (the nibble in the high half of an int8)
SHIFT = 4  # log2(SCALE): the kernel's last stage shifts its sums back by this
NIBBLE_SUFFIX = "u8i4"  # a packed kernel with a 4-bit weight: conv2d_3_u8i4 (8-bit: conv2d_3_u8i8)


def fits_int4(values: np.ndarray) -> bool:
    """Whether every value of an integer weight lies in [-8, 7]."""
    values = np.asarray(values)
    return bool(values.size) and int(values.min()) >= INT4_MIN and int(values.max()) <= INT4_MAX


def packs_as_nibbles(weight: np.ndarray, reduce_axes: tuple[int, ...], activation_max: int = 255) -> bool:
    """Whether an int8 ``weight`` holds 4-bit values and 16 x its worst-case sum over ``reduce_axes`` with
    activations up to ``activation_max`` stays inside int32 (the unpacked kernel accumulates 16 w)."""
    if not fits_int4(weight):
        return False
    worst = np.abs(weight.astype(np.int64)).sum(axis=reduce_axes).max()
    return SCALE * activation_max * int(worst) < 2**31


def pair_groups(values: np.ndarray, axis: int) -> np.ndarray:
    """uint8 bytes holding ``values`` (int8, 4-bit) with index 2j along ``axis`` in the low nibble and
    2j + 1 in the high nibble; an odd length along ``axis`` is padded with zeros."""
    values = np.asarray(values)
    if not fits_int4(values):
        raise ValueError(f"values span [{values.min()}, {values.max()}]: not 4-bit signed [-8, 7]")
    width = [(0, 0)] * values.ndim
    width[axis] = (0, values.shape[axis] % 2)
    nibbles = (np.pad(values, width).astype(np.int16) & 0xF).astype(np.uint8)
    low, high = np.take(nibbles, range(0, nibbles.shape[axis], 2), axis), np.take(
        nibbles, range(1, nibbles.shape[axis], 2), axis)
    return np.ascontiguousarray(low | (high << 4))


def unpair_groups(packed: np.ndarray, axis: int, length: int) -> np.ndarray:
    """The int8 values ``pair_groups`` packed: ``length`` of them along ``axis``."""
    packed = np.asarray(packed, np.uint8)
    low, high = (packed & 0xF).astype(np.int8), (packed >> 4).astype(np.int8)
    both = np.stack([low, high], axis=axis + 1)
    shape = list(packed.shape)
    shape[axis] *= 2
    values = both.reshape(shape)
    values = np.where(values > INT4_MAX, values - 16, values).astype(np.int8)
    return np.take(values, range(length), axis)


def pack_matmul_nibbles(packed: np.ndarray) -> np.ndarray:
    """A matmul weight packed by ``packed_layouts.pack_matmul_weight`` ([N'/16, K/g, 16, g] int8) as
    [N'/16, K/2g, 16, g] bytes: groups 2j and 2j + 1 of each 16-column block in one vector."""
    return pair_groups(packed, axis=1)


def pack_implicit_nibbles(packed: np.ndarray, taps: int) -> np.ndarray:
    """An implicit convolution's weight (``packed_layouts.conv2d_implicit``: [O/16, C/g * taps, 16, g] int8,
    step ``c * taps + t`` for channel group c and filter tap t) as [O/16, C/2g * taps, 16, g] bytes: channel
    groups 2m and 2m + 1 of the same tap in one vector, at step ``m * taps + t``. (Pairing consecutive steps,
    as a matmul does, would pair taps across filter rows, which the kernel's tile visits apart.)"""
    blocks, steps, lanes, group = packed.shape
    if steps % (2 * taps):
        raise ValueError(f"{steps} steps are not pairs of channel groups of {taps} taps each")
    pairs = packed.reshape(blocks, steps // taps // 2, 2, taps, lanes, group).transpose(0, 1, 3, 2, 4, 5)
    return pair_groups(pairs.reshape(blocks, -1, lanes, group), axis=1)


def conv_nibble_block(reduce: int) -> int:
    """The block length of a flattened conv weight's nibble pairs: the longest of 64, 32, ..., 2 bytes that
    divides its padded reduction (a multiple of the kernel's group), so unpacking is one load per block."""
    return next(width for width in (64, 32, 16, 8, 4, 2) if reduce % width == 0)


def pack_conv_nibbles(flat: np.ndarray) -> np.ndarray:
    """A flattened conv weight ([O, R'] int8, R' even) as [O, ceil(R' / 2B) * B] bytes, B =
    ``conv_nibble_block(R')``: consecutive blocks of B elements in pairs, block 2j in the low nibbles of
    bytes ``jB .. jB + B - 1`` and block 2j + 1 in their high nibbles. (The conv broadcasts its weight, so
    its kernel unpacks the whole weight once per call, a vector per block.)"""
    out, reduce = flat.shape
    block = conv_nibble_block(reduce)
    return pair_groups(flat.reshape(out, reduce // block, block), axis=1).reshape(out, -1)


def conv_nibble(packed, o, r, reduce: int):
    """TE/TIR: 16 x element ``r`` of row ``o`` of a conv weight packed by ``pack_conv_nibbles``."""
    block = conv_nibble_block(reduce)
    return nibble16(packed[o, r // (2 * block) * block + r % block], r // block % 2)


def nibble16(byte, high):
    """TE/TIR: 16 x the 4-bit value in the ``high`` (1) or low (0) nibble of uint8 ``byte``, as int8."""
    from tvm import tirx

    mask, shift = tirx.const(0xF0, "uint8"), tirx.const(SHIFT, "uint8")
    return tirx.Select(high == 1, tirx.bitwise_and(byte, mask), tirx.shift_left(byte, shift)).astype("int8")
