"""4-bit packing: every value round-trips, the nibble order is fixed, and bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest

from passes.int4 import pack_int4, unpack_int4


def test_every_signed_value_round_trips_at_odd_and_even_lengths():
    values = np.arange(-8, 8, dtype=np.int8)
    for length in (16, 15, 1):
        packed = pack_int4(values[:length])
        assert packed.dtype == np.uint8 and packed.size == (length + 1) // 2
        np.testing.assert_array_equal(unpack_int4(packed, length), values[:length])


def test_unsigned_values_round_trip():
    values = np.arange(16, dtype=np.uint8)
    np.testing.assert_array_equal(unpack_int4(pack_int4(values), 16, signed=False), values)


def test_low_nibble_holds_the_first_element():
    assert pack_int4(np.array([1, -1])).tolist() == [0xF1]


def test_a_weight_tensor_halves_in_size():
    weight = np.random.default_rng(0).integers(-7, 8, (32, 16, 3, 3)).astype(np.int8)
    packed = pack_int4(weight)
    assert packed.nbytes * 2 == weight.nbytes
    np.testing.assert_array_equal(unpack_int4(packed, weight.size).reshape(weight.shape), weight)


@pytest.mark.parametrize("bad", [[16], [-9], [-1, 9]])
def test_values_outside_4_bits_are_refused(bad):
    with pytest.raises(ValueError, match="not 4-bit"):
        pack_int4(np.array(bad))
