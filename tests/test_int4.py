"""4-bit weights: the nibble-pair layouts round-trip, the unpacked value is 16 w, unsafe weights stay 8-bit."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from passes.int4 import (
    conv_nibble_block,
    fits_int4,
    pack_conv_nibbles,
    pack_implicit_nibbles,
    pack_matmul_nibbles,
    packs_as_nibbles,
    pair_groups,
    unpair_groups,
)
from passes.packed_layouts import (
    flatten_conv_weight,
    flatten_conv_weight_by_taps,
    pack_conv_weight_by_channels,
    pack_matmul_weight,
)

RNG = np.random.default_rng(0)


def test_every_value_round_trips_at_odd_and_even_lengths():
    values = np.arange(-8, 8, dtype=np.int8)
    for length in (16, 15, 1):
        packed = pair_groups(values[:length], axis=0)
        assert packed.dtype == np.uint8 and packed.size == (length + 1) // 2
        np.testing.assert_array_equal(unpair_groups(packed, 0, length), values[:length])


def test_the_even_index_takes_the_low_nibble():
    assert pair_groups(np.array([1, -1], np.int8), axis=0).tolist() == [0xF1]


def test_a_matmul_weight_pairs_consecutive_groups_in_one_vector():
    weight = RNG.integers(-8, 8, (64, 40), dtype=np.int8)
    packed = pack_matmul_weight(weight)  # [3, 16, 16, 4]
    nibbles = pack_matmul_nibbles(packed)
    assert nibbles.shape == (3, 8, 16, 4) and nibbles.nbytes * 2 == packed.nbytes
    # byte [a, j, c, d]: group 2j (low) and 2j + 1 (high) of column block a
    assert (nibbles[1, 2, 5, 3] & 0xF) == (packed[1, 4, 5, 3] & 0xF)
    assert (nibbles[1, 2, 5, 3] >> 4) == (packed[1, 5, 5, 3] & 0xF)
    np.testing.assert_array_equal(unpair_groups(nibbles, 1, 16), packed)


def test_an_implicit_conv_weight_pairs_channel_groups_of_the_same_tap():
    weight = RNG.integers(-8, 8, (32, 16, 3, 3), dtype=np.int8)
    packed = pack_conv_weight_by_channels(flatten_conv_weight_by_taps(weight))  # [2, 4 groups x 9 taps, 16, 4]
    nibbles = pack_implicit_nibbles(packed, 9)
    assert nibbles.shape == (2, 18, 16, 4) and nibbles.dtype == np.uint8
    # byte [a, m * 9 + t, c, d]: channel group 2m (low) and 2m + 1 (high) at tap t, not taps t and t + 1
    assert (nibbles[1, 9 + 4, 5, 3] & 0xF) == (packed[1, 2 * 9 + 4, 5, 3] & 0xF)
    assert (nibbles[1, 9 + 4, 5, 3] >> 4) == (packed[1, 3 * 9 + 4, 5, 3] & 0xF)
    assert weight[16 + 5, 3 * 4 + 3, 1, 1] == packed[1, 3 * 9 + 4, 5, 3]
    with pytest.raises(ValueError, match="not pairs of channel groups"):
        pack_implicit_nibbles(packed[:, :27], 9)  # three groups


def test_a_4bit_conv_reads_the_image_where_its_channel_groups_pair():
    from tvm import relax

    from passes.pack_int8_layers import pack_int8_layers

    def kernel_text(channels: int) -> str:
        builder = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((1, channels, 14, 14), "uint8"))
        with builder.function("main", [x]):
            weight = relax.const(RNG.integers(-8, 8, (32, channels, 3, 3), np.int8))
            out = builder.emit(relax.op.nn.conv2d(x, weight, padding=1, out_dtype="int32"))
            builder.emit_func_output(out)
        with tvm.target.Target({"kind": "llvm", "mcpu": "znver4"}):
            packed = pack_int8_layers(builder.get())
        (text,) = [f.script() for f in packed.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
        return text

    assert "qc_int8_image" in kernel_text(32) and "qc_int8_unpack" in kernel_text(32)  # 8 groups: 4 pairs
    assert "qc_int8_im2col" in kernel_text(20)  # 5 groups: the last would pair with nothing


@pytest.mark.parametrize("reduce, block", [(576, 64), (96, 32), (48, 16), (148, 4), (192, 64)])
def test_a_conv_weight_pairs_blocks_of_its_row(reduce, block):
    assert conv_nibble_block(reduce) == block
    flat = RNG.integers(-8, 8, (8, reduce), dtype=np.int8)
    nibbles = pack_conv_nibbles(flat)
    assert nibbles.shape == (8, -(-reduce // (2 * block)) * block)
    # byte jB + t: element 2jB + t (low nibble), 2jB + B + t (high)
    for r in (0, block - 1, block, 2 * block + 1, reduce - 1):
        byte = int(nibbles[3, r // (2 * block) * block + r % block])
        nibble = (byte >> 4) if r // block % 2 else (byte & 0xF)
        assert (nibble - 16 if nibble > 7 else nibble) == flat[3, r]


def test_unpacking_gives_sixteen_times_the_value_as_int8():
    byte = pair_groups(np.arange(-8, 8, dtype=np.int8), axis=0)
    high = (byte & 0xF0).view(np.int8).astype(np.int32)
    low = (byte << 4).astype(np.uint8).view(np.int8).astype(np.int32)
    np.testing.assert_array_equal(low, 16 * np.arange(-8, 8, 2))
    np.testing.assert_array_equal(high, 16 * np.arange(-7, 8, 2))


def test_values_outside_4_bits_are_refused():
    assert not fits_int4(np.array([8], np.int8)) and not fits_int4(np.array([-9], np.int16))
    with pytest.raises(ValueError, match="not 4-bit"):
        pair_groups(np.array([9, 1], np.int8), axis=0)


def test_a_weight_whose_16x_sums_could_overflow_int32_keeps_8_bits():
    small = np.full((1, 64, 3, 3), 7, np.int8)
    assert packs_as_nibbles(small, (1, 2, 3))
    # 16 x 255 x 7 x 75264 >= 2^31: the unpacked kernel's sums could wrap
    huge = np.full((75264, 1), 7, np.int8)
    assert not packs_as_nibbles(huge, (0,))
    assert not packs_as_nibbles(RNG.integers(-127, 128, (64, 32), dtype=np.int8), (0,))


def test_flattened_conv_weights_pack_with_their_reduction_padding():
    weight = RNG.integers(-8, 8, (16, 5, 3, 3), dtype=np.int8)  # R = 45 -> 48: three blocks of 16, a fourth of zeros
    flat = flatten_conv_weight(weight)
    nibbles = pack_conv_nibbles(flat)
    assert nibbles.shape == (16, 32)
    np.testing.assert_array_equal(unpair_groups(nibbles.reshape(16, 2, 16), 1, 3).reshape(16, 48), flat)
