"""Row kernels for x86 with AVX-512 VNNI and VBMI: int8 depthwise convolutions with four filter taps per lane
(``vpdpbusd`` on windows of the input row permuted by ``vpermb``), uint8 max pooling by rows, and the
padding stage both read where the padding is not in the kernel's lanes.

The layout is ``packed_layouts.depthwise_conv2d_taps``: the plain NCHW arithmetic on the output's own shape.
``vpdpbusd`` adds, in each of 16 int32 lanes, four uint8 x int8 products. Here a lane is an output pixel and
its four products are four consecutive taps 4g..4g+3 of one filter row i: the lane of output (y, x) needs
the input bytes ``in[y*sy + i, x*sx + 4g + t]``. For 16 pixels of one row those bytes lie in one 64-byte
window of input row ``y*sy + i`` (15 * sx + 4 <= 64 for sx <= 4), so the operand is one masked load (only
the bytes the lanes read: nothing past the input's end, no padded copy for the vector's width) and one
``vpermb`` through a constant table; the weight operand is the four taps broadcast to every lane, zero past
the filter's width (so whatever the table puts in those bytes adds 0). A window of input row Y serves every
output row of the tile that reads it (each filter row i with Y = y*sy + i): loaded and permuted once, then
one ``vpdpbusd`` per use. Per 16 outputs of a 3x3 stride-1 layer that is 3 ``vpdpbusd`` and, over a tile of
8 rows, 1.25 loads and permutes; of a 5x5, 10 and 1.5 x 2. Rows narrower than 8 share a vector (a 7-wide row:
two rows in 14 lanes) where their bytes fit one window; a row's last partial vector is loaded and stored
under a mask.

Max pooling of 3-wide windows at column stride 2 (``packed_layouts.max_pool2d_rows``) makes 32 outputs a
step: two masked 64-byte loads per window row (columns 2x and 2x + 2), their maximum over the window's rows,
then the even and odd bytes as the low and high halves of 16-bit words (``vpmovwb``) and their maximum.

``schedule_depthwise_taps`` tiles each channel by ``tile_rows`` output rows, accumulates a tile in a small
buffer and writes it back through the fused epilogue (``x86_packed._write_back_at``), the tile's
computation replaced by the generated straight-line kernel (tensorize: its description is the layout's own
arithmetic for one tile, its sums' init included: the kernel starts them at 0). Without padding the tiles
of all channels are the parallel tasks. With a ``pad`` stage (the layer's, or the zero-point pad
``pack_int8_layers`` took in) each channel is one task: where the channel is at most 64 vectors (28x28 and
smaller: ``fits_one_kernel``), the pad is inlined and the whole channel is one kernel that reads the unpadded
image, the fill merged into its masked loads for the lanes whose taps fall in the padding
(``_padded_window``); a larger channel gets its padded image made first, 64 bytes at a time (one masked
load, one ``vpermb``, the fill merged, one store).

Numerics: exact (int32 sums of uint8 x int8 products, no saturation; zero weights on the padding taps; the
pooling's padding 0, below every uint8).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder.tirx import prim_func as build_prim_func
from tvm_ffi.structural import structural_map

from passes.packed_layouts import COLUMN_STRIDE, INPUT_PITCH, ROW_STRIDE

LANES = 16
TAPS = 4  # filter taps per vpdpbusd lane
WINDOW = 64  # the bytes one vpermb selects from
MAX_TILE_ROWS = 8  # output rows accumulated together (accumulators, the rows' filter weights: in registers)
_VPDPBUSD = "llvm.x86.avx512.vpdpbusd.512"
_VPERMB = "llvm.x86.avx512.permvar.qi.512"


def tile_rows(out_rows: int) -> int:
    """Output rows per tile: the most, up to ``MAX_TILE_ROWS``, that divide ``out_rows``."""
    return max(r for r in range(1, MAX_TILE_ROWS + 1) if out_rows % r == 0)


def rows_per_vector(width: int, stride: tuple[int, int], pitch: int, limit: int = WINDOW) -> int:
    """Output rows one vector holds: as many whole rows of ``width`` as fill 16 lanes and read within
    ``limit`` bytes of one window (1 for rows of 9 pixels or more)."""
    sy, sx = stride
    rows = max(1, LANES // width)
    while rows > 1 and (rows - 1) * sy * pitch + (width - 1) * sx + TAPS > limit:
        rows -= 1
    return rows


def fits_one_kernel(tile: DepthwiseTile, most_vectors: int = 64) -> bool:
    """Whether a padded whole-channel tile is one kernel: every vector's taps within a window (a byte to
    spare for the fill) and at most ``most_vectors`` vectors (its straight-line code stays small: 28x28 has
    56)."""
    vectors = sum(len(block) for block in _column_blocks(tile))
    return (min(LANES, tile.width) - 1) * tile.stride[1] + TAPS <= tile.window_limit() and vectors <= most_vectors


@dataclass(frozen=True)
class DepthwiseTile:
    """One tile's shape: ``rows`` x ``width`` outputs of a ``kernel`` filter at ``stride`` over an input of
    row ``pitch`` bytes. With ``padding`` the tile is a whole channel read from its unpadded image (``pitch``
    its width) through the padding's coordinates: the kernel puts the fill in the lanes that read it."""

    rows: int
    width: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pitch: int
    padding: PaddedImage | None = None

    @property
    def input_shape(self) -> tuple[int, int]:
        (kh, kw), (sy, sx) = self.kernel, self.stride
        return (self.rows - 1) * sy + kh, (self.width - 1) * sx + kw

    @property
    def groups(self) -> int:
        return -(-self.kernel[1] // TAPS)

    def name(self) -> str:
        (kh, kw), (sy, sx) = self.kernel, self.stride
        padded = "" if self.padding is None else "_" + self.padding.name().removeprefix("qc_pad_rows_")
        return f"qc_depthwise_taps_{self.rows}x{self.width}_k{kh}x{kw}_s{sy}x{sx}_p{self.pitch}{padded}"

    def window_limit(self) -> int:
        """The bytes a vector's lanes may span in one window: all 64, or, padded, 63 (a byte left out of the
        load, where the fill comes in)."""
        return WINDOW if self.padding is None else WINDOW - 1


@dataclass(frozen=True)
class _Vector:
    """16 lanes of a tile: ``rows`` output rows from ``row`` of ``cols`` columns from ``col``, row-major."""

    row: int
    col: int
    rows: int
    cols: int

    @property
    def lanes(self) -> int:
        return self.rows * self.cols


def _column_blocks(tile: DepthwiseTile) -> list[list[_Vector]]:
    """The tile's vectors, by column block: each block's vectors in row order, consecutive ones
    ``rows_per_vector`` output rows apart."""
    per = rows_per_vector(tile.width, tile.stride, tile.pitch, tile.window_limit())
    if per > 1:
        return [[_Vector(row, 0, min(per, tile.rows - row), tile.width) for row in range(0, tile.rows, per)]]
    return [[_Vector(row, col, 1, min(LANES, tile.width - col)) for row in range(tile.rows)]
            for col in range(0, tile.width, LANES)]


def _lane_table(tile: DepthwiseTile, vector: _Vector, taps: int):
    """vpermb's byte table: for lane l and tap t, the byte of the window lane l's pixel reads at tap t (taps
    past the filter repeat its last one: their weights are 0); lanes past the vector read byte 0."""
    (sy, sx), table = tile.stride, []
    for lane in range(LANES):
        for t in range(TAPS):
            inside = lane < vector.lanes
            offset = (lane // vector.cols) * sy * tile.pitch + (lane % vector.cols) * sx + min(t, taps - 1)
            table.append(offset if inside else 0)
    return T.Shuffle([T.int8(v) for v in table], list(range(LANES * TAPS)))


def _padded_window(tile: DepthwiseTile, image, vector: _Vector, y: int, start: int, taps: int):
    """The operand of ``vector``'s lanes for padded input row ``y`` and taps from padded column ``start``:
    lane l, tap t reads padded (y + (l // cols) * sy, start + (l % cols) * sx + t). The window is loaded
    from the unpadded image at that coordinate (a byte p of it lies p bytes on in the image's rows of
    ``pitch``), only the bytes some lane reads inside the image (the rest never touched: they may lie in
    another channel or outside the tensor); lanes reading the padding take a byte left out of the load,
    which the load fills with the fill. A row whose lanes all read padding is the fill alone, no load."""
    pad, (sy, sx) = tile.padding, tile.stride
    table, needed = [], set()
    for lane in range(LANES):
        for t in range(TAPS):
            row, col = lane // vector.cols, lane % vector.cols
            y_at, x_at = y + row * sy, start + col * sx + t
            inside = (lane < vector.lanes and t < taps and pad.top <= y_at < pad.top + pad.height
                      and pad.left <= x_at < pad.left + pad.width)
            position = row * sy * tile.pitch + col * sx + t if inside else None
            table.append(position)
            if position is not None:
                needed.add(position)
    fill = T.broadcast(tvm.tirx.const(pad.fill, "uint8"), WINDOW)
    if not needed:
        return T.reinterpret("int8x64", fill)
    spare = max(set(range(WINDOW)) - needed)
    mask = T.Shuffle([T.bool(p in needed) for p in range(WINDOW)], list(range(WINDOW)))
    window = T.call_llvm_intrin("uint8x64", "llvm.masked.load.v64i8.p0", T.address_of(image[y, start]), mask, fill)
    indices = T.Shuffle([T.int8(spare if p is None else p) for p in table], list(range(LANES * TAPS)))
    return T.call_llvm_pure_intrin("int8x64", _VPERMB, T.reinterpret("int8x64", window), indices)


def masked_load(dtype: str, lanes: int, address, count: int):
    """``lanes`` elements from ``address``, only the first ``count`` read (the rest 0)."""
    mask = T.ramp(0, 1, lanes) < T.broadcast(count, lanes)
    intrinsic = f"llvm.masked.load.v{lanes}i{''.join(filter(str.isdigit, dtype))}.p0"
    zeros = T.broadcast(tvm.tirx.const(0, dtype), lanes)
    return T.call_llvm_intrin(f"{dtype}x{lanes}", intrinsic, address, mask, zeros)


def _implementation(tile: DepthwiseTile):
    """The tile's kernel, straight-line code (see the module docstring)."""
    rows, width, (kh, kw), (sy, sx) = tile.rows, tile.width, tile.kernel, tile.stride
    in_rows, in_cols = tile.input_shape
    with IRBuilder() as builder:
        with build_prim_func(s_tir=True):
            T.func_name("impl")
            image_handle, weight_handle, acc_handle = (T.arg(n, T.handle()) for n in ("image", "weight", "acc"))
            image = T.match_buffer(image_handle, (in_rows, in_cols), "uint8", strides=[tile.pitch, 1],
                                   offset_factor=1)
            weight = T.match_buffer(weight_handle, (kh, kw), "int8", strides=[kw, 1], offset_factor=1)
            acc = T.match_buffer(acc_handle, (rows, width), "int32", strides=[width, 1], offset_factor=1)
            with T.sblock("root"):
                T.reads(image[0:in_rows, 0:in_cols], weight[0:kh, 0:kw])
                T.writes(acc[0:rows, 0:width])
                weights = [[T.Bind(_tap_weights(weight, i, g, kw)) for g in range(tile.groups)] for i in range(kh)]
                for vectors in _column_blocks(tile):
                    _column_block(tile, image, acc, weights, vectors)
    return builder.get()


def _tap_weights(weight, i: int, g: int, kw: int):
    """Filter row i's taps 4g..4g+3 (0 past the filter's width) in every lane: vpdpbusd's int8x64 operand."""
    taps = min(TAPS, kw - TAPS * g)
    four = (weight.vload([i, TAPS * g], "int8x4") if taps == TAPS
            else masked_load("int8", TAPS, T.address_of(weight[i, TAPS * g]), taps))
    return T.reinterpret("int8x64", T.broadcast(T.reinterpret("int32", four), LANES))


def _column_block(tile: DepthwiseTile, image, acc, weights, vectors: list[_Vector]) -> None:
    """Accumulate one column block's vectors: each window of an input row loaded and permuted once, then
    added into every vector that reads it."""
    (kh, kw), (sy, sx) = tile.kernel, tile.stride
    step = (vectors[1].row - vectors[0].row) * sy if len(vectors) > 1 else 0
    sums = {}
    for y in range((len(vectors) - 1) * step + kh):
        users = [(k, y - k * step) for k in range(len(vectors)) if 0 <= y - k * step < kh]
        for k, i in users:  # each sum from 0 where first used, stored after its last row (few live at once)
            if i == 0:
                sums[k] = T.broadcast(T.int32(0), LANES)
        for shape in sorted({vectors[k].rows for k, _ in users}):
            vector = next(vectors[k] for k, _ in users if vectors[k].rows == shape)
            for g in range(tile.groups):
                taps, start = min(TAPS, kw - TAPS * g), vector.col * sx + TAPS * g
                if tile.padding is not None:
                    permuted = T.Bind(_padded_window(tile, image, vector, y, start, taps))
                else:
                    count = (vector.rows - 1) * sy * tile.pitch + (vector.cols - 1) * sx + taps
                    window = masked_load("uint8", WINDOW, T.address_of(image[y, start]), count)
                    permuted = T.Bind(T.call_llvm_pure_intrin("int8x64", _VPERMB, T.reinterpret("int8x64", window),
                                                              _lane_table(tile, vector, taps)))
                for k, i in users:
                    if vectors[k].rows == shape:
                        sums[k] = T.Bind(T.call_llvm_pure_intrin("int32x16", _VPDPBUSD, sums[k], permuted,
                                                                 weights[i][g]))
        for k, i in users:
            if i == kh - 1:
                _store_sum(acc, vectors[k], sums.pop(k))


def _store_sum(acc, vector: _Vector, value) -> None:
    if vector.lanes == LANES:
        T.buffer_store(acc, value, [vector.row, T.ramp(vector.col, 1, LANES)])
    else:
        masked_store("int32", LANES, value, T.address_of(acc[vector.row, vector.col]), vector.lanes)


def _description(tile: DepthwiseTile):
    """The tile's arithmetic as the layout states it (what tensorize matches); padded, as it reads once the
    layout's ``pad`` stage is inlined: the fill where a tap's padded coordinate lies outside the image."""
    rows, width, (kh, kw), (sy, sx) = tile.rows, tile.width, tile.kernel, tile.stride
    in_rows, in_cols = tile.input_shape
    pad = tile.padding

    def tap(image, y, x):
        if pad is None:
            return image[y, x]
        inside = tvm.tirx.all(y >= pad.top, y < pad.top + pad.height, x >= pad.left, x < pad.left + pad.width)
        return T.if_then_else(inside, image[y, x], tvm.tirx.const(pad.fill, "uint8"))

    @T.prim_func(s_tir=True)
    def desc(image: T.Buffer((in_rows, in_cols), "uint8", offset_factor=1),
             weight: T.Buffer((kh, kw), "int8", offset_factor=1),
             acc: T.Buffer((rows, width), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(image[0:in_rows, 0:in_cols], weight[0:kh, 0:kw])
            T.writes(acc[0:rows, 0:width])
            with T.init():
                for y, x in T.grid(rows, width):
                    with T.sblock("init"):
                        vy, vx = T.axis.remap("SS", [y, x])
                        acc[vy, vx] = 0
            for y, x, i, j in T.grid(rows, width, kh, kw):
                with T.sblock("update"):
                    vy, vx, vi, vj = T.axis.remap("SSRR", [y, x, i, j])
                    acc[vy, vx] = acc[vy, vx] + T.cast(tap(image, vy * sy + vi, vx * sx + vj), "int32") * T.cast(
                        weight[vi, vj], "int32")

    @T.prim_func(s_tir=True)
    def row_desc(image: T.Buffer((in_rows, in_cols), "uint8", offset_factor=1),
                 weight: T.Buffer((kh, kw), "int8", offset_factor=1),
                 acc: T.Buffer((1, width), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(image[0:in_rows, 0:in_cols], weight[0:kh, 0:kw])
            T.writes(acc[0:1, 0:width])
            with T.init():
                for x in T.serial(width):
                    with T.sblock("init"):
                        vx = T.axis.spatial(width, x)
                        acc[0, vx] = 0
            for x, i, j in T.grid(width, kh, kw):
                with T.sblock("update"):
                    vx, vi, vj = T.axis.remap("SRR", [x, i, j])
                    acc[0, vx] = acc[0, vx] + T.cast(image[vi, vx * sx + vj], "int32") * T.cast(weight[vi, vj], "int32")

    return desc if rows > 1 else row_desc  # a tile of one row: its unit row loop is not the block's to match


def intrinsic(tile: DepthwiseTile, kind: str = "depthwise") -> str:
    """The name of ``tile``'s kernel (``depthwise`` or ``maxpool``) as a tensor intrinsic, registered with TVM
    on first use."""
    name = tile.name() if kind == "depthwise" else tile.name().replace("depthwise_taps", "maxpool_rows")
    try:
        TensorIntrin.get(name)
    except Exception:  # noqa: BLE001  (not registered yet)
        if kind == "depthwise":
            TensorIntrin.register(name, _description(tile), _implementation(tile))
        else:
            TensorIntrin.register(name, _pool_description(tile), _pool_implementation(tile))
    return name


@dataclass(frozen=True)
class PaddedImage:
    """A channel's ``height`` x ``width`` input made ``rows`` x ``cols``, from ``top`` / ``left``, the rest
    ``fill``."""

    height: int
    width: int
    top: int
    left: int
    rows: int
    cols: int
    fill: int

    def name(self) -> str:
        return (f"qc_pad_rows_{self.height}x{self.width}_at{self.top}x{self.left}_to{self.rows}x{self.cols}"
                f"_f{self.fill}")


def pad_intrinsic(image: PaddedImage) -> str:
    """The name of the padding of one channel as a tensor intrinsic, registered with TVM on first use."""
    name = image.name()
    try:
        TensorIntrin.get(name)
    except Exception:  # noqa: BLE001  (not registered yet)
        TensorIntrin.register(name, _pad_description(image), _pad_implementation(image))
    return name


def _pad_description(image: PaddedImage):
    """The layout's padding stage for one channel (``packed_layouts``' ``pad`` blocks: the data read at an
    offset, guarded)."""
    height, width, top, left, rows, cols = (image.height, image.width, image.top, image.left, image.rows,
                                            image.cols)
    fill = tvm.tirx.const(image.fill, "uint8")

    @T.prim_func(s_tir=True)
    def desc(data: T.Buffer((rows, cols), "uint8", offset_factor=1),
             padded: T.Buffer((rows, cols), "uint8", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(data[0:rows, 0:cols])
            T.writes(padded[0:rows, 0:cols])
            for y, x in T.grid(rows, cols):
                with T.sblock("pad"):
                    vy, vx = T.axis.remap("SS", [y, x])
                    padded[vy, vx] = T.if_then_else(
                        tvm.tirx.all(vy >= top, vy < top + height, vx >= left, vx < left + width),
                        data[vy, vx], fill)

    return desc


def _pad_implementation(image: PaddedImage):
    """The padded channel 64 bytes at a time: the data bytes a block of 64 holds lie within 64 consecutive
    bytes of the data (the padding only spreads them), so one masked load, one ``vpermb`` through a constant
    table, ``fill`` merged over the padding and one store make the block. Each byte is stored once, by a
    few whole-vector stores (a byte-by-byte or row-by-row copy left many small stores in flight that the
    kernel's loads, reading across them, then waited for: 1152 channels 5x5 at 7x7 took 36 us against 18.5
    with the padding already made, alone)."""
    rows, cols, height, width = image.rows, image.cols, image.height, image.width
    with IRBuilder() as builder:
        with build_prim_func(s_tir=True):
            T.func_name("impl")
            data_handle, padded_handle = T.arg("data", T.handle()), T.arg("padded", T.handle())
            data = T.match_buffer(data_handle, (rows, cols), "uint8", strides=[width, 1], offset_factor=1)
            padded = T.match_buffer(padded_handle, (rows, cols), "uint8", strides=[cols, 1], offset_factor=1)
            with T.sblock("root"):
                T.reads(data[0:rows, 0:cols])
                T.writes(padded[0:rows, 0:cols])
                fill = T.broadcast(tvm.tirx.const(image.fill, "uint8"), WINDOW)
                for start in range(0, rows * cols, WINDOW):
                    count = min(WINDOW, rows * cols - start)
                    sources = [_data_index(image, start + lane) if lane < count else None for lane in range(WINDOW)]
                    inside = [d for d in sources if d is not None]
                    block = fill
                    if inside:
                        first = min(inside)
                        window = masked_load("uint8", WINDOW, T.address_of(
                            data[image.top + first // width, image.left + first % width]), max(inside) - first + 1)
                        table = T.Shuffle([T.int8(0 if d is None else d - first) for d in sources], list(range(WINDOW)))
                        mask = T.Shuffle([T.bool(d is not None) for d in sources], list(range(WINDOW)))
                        permuted = T.call_llvm_pure_intrin("int8x64", _VPERMB, T.reinterpret("int8x64", window), table)
                        block = T.Select(mask, T.reinterpret("uint8x64", permuted), fill)
                    masked_store("uint8", WINDOW, block, T.address_of(padded[start // cols, start % cols]), count)
    return builder.get()


def _data_index(image: PaddedImage, position: int) -> int | None:
    """The data element (row-major, unpadded) at a flat position of the padded channel, None in the padding."""
    y, x = position // image.cols - image.top, position % image.cols - image.left
    return y * image.width + x if 0 <= y < image.height and 0 <= x < image.width else None


POOL_LANES = 32  # output bytes a max-pooling step makes: the even bytes of a 64-byte window


def _pool_description(tile: DepthwiseTile):
    """A tile of max pooling as the layout states it (what tensorize matches)."""
    rows, width, (kh, kw), (sy, sx) = tile.rows, tile.width, tile.kernel, tile.stride
    in_rows, in_cols = tile.input_shape

    @T.prim_func(s_tir=True)
    def desc(image: T.Buffer((in_rows, in_cols), "uint8", offset_factor=1),
             out: T.Buffer((rows, width), "uint8", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(out[0:rows, 0:width], image[0:in_rows, 0:in_cols])
            T.writes(out[0:rows, 0:width])
            for y, x, i, j in T.grid(rows, width, kh, kw):
                with T.sblock("update"):
                    vy, vx, vi, vj = T.axis.remap("SSRR", [y, x, i, j])
                    out[vy, vx] = T.max(out[vy, vx], image[vy * sy + vi, vx * sx + vj])

    @T.prim_func(s_tir=True)
    def row_desc(image: T.Buffer((in_rows, in_cols), "uint8", offset_factor=1),
                 out: T.Buffer((1, width), "uint8", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(out[0:1, 0:width], image[0:in_rows, 0:in_cols])
            T.writes(out[0:1, 0:width])
            for x, i, j in T.grid(width, kh, kw):
                with T.sblock("update"):
                    vx, vi, vj = T.axis.remap("SRR", [x, i, j])
                    out[0, vx] = T.max(out[0, vx], image[vi, vx * sx + vj])

    return desc if rows > 1 else row_desc


def _pool_implementation(tile: DepthwiseTile):
    """Max pooling of 3-wide windows at column stride 2, 32 outputs a step: the window rows' maximum on whole
    64-byte loads from columns 2x and 2x + 2, then, read as 16-bit words, the low bytes (columns 2x,
    ``vpmovwb``), the high bytes (2x + 1) and the low bytes of the second (2x + 2), their maximum."""
    rows, width, (kh, kw), (sy, sx) = tile.rows, tile.width, tile.kernel, tile.stride
    in_rows, in_cols = tile.input_shape
    with IRBuilder() as builder:
        with build_prim_func(s_tir=True):
            T.func_name("impl")
            image_handle, out_handle = T.arg("image", T.handle()), T.arg("out", T.handle())
            image = T.match_buffer(image_handle, (in_rows, in_cols), "uint8", strides=[tile.pitch, 1],
                                   offset_factor=1)
            out = T.match_buffer(out_handle, (rows, width), "uint8", strides=[width, 1], offset_factor=1)
            with T.sblock("root"):
                T.reads(out[0:rows, 0:width], image[0:in_rows, 0:in_cols])
                T.writes(out[0:rows, 0:width])
                for y in range(rows):
                    for x in range(0, width, POOL_LANES):
                        count = min(POOL_LANES, width - x)
                        words = []
                        for shift, need in ((0, 2 * count), (2, 2 * count - 1)):
                            window = None
                            for i in range(kh):
                                row = masked_load("uint8", 2 * POOL_LANES,
                                                   T.address_of(image[y * sy + i, 2 * x + shift]), need)
                                window = row if window is None else T.max(window, row)
                            words.append(T.Bind(T.reinterpret(f"uint16x{POOL_LANES}", window)))
                        even, odd = T.Cast(f"uint8x{POOL_LANES}", words[0]), T.Cast(
                            f"uint8x{POOL_LANES}", T.shift_right(words[0], T.broadcast(T.uint16(8), POOL_LANES)))
                        pooled = T.max(T.max(even, odd), T.Cast(f"uint8x{POOL_LANES}", words[1]))
                        address = T.address_of(out[y, x])
                        pooled = T.max(pooled, masked_load("uint8", POOL_LANES, address, count))
                        masked_store("uint8", POOL_LANES, pooled, address, count)
    return builder.get()


def masked_store(dtype: str, lanes: int, value, address, count: int) -> None:
    """Store the first ``count`` of ``value``'s ``lanes`` elements at ``address``."""
    mask = T.ramp(0, 1, lanes) < T.broadcast(count, lanes)
    T.evaluate(T.call_llvm_intrin("void", f"llvm.masked.store.v{lanes}i{''.join(filter(str.isdigit, dtype))}.p0",
                                  value, address, mask))


def is_taps_block(sch: s_tir.Schedule, block) -> bool:
    """Whether a depthwise block has the four-taps-per-lane layout (its ``INPUT_PITCH`` annotation)."""
    return INPUT_PITCH in sch.get(block).annotations


def schedule_depthwise_taps(sch: s_tir.Schedule, kind: str, block, pad, write_back_at, native: bool = True) -> None:
    """Tiles of ``tile_rows`` output rows of one channel, parallel, each accumulated by the generated kernel
    (``kind``: ``depthwise`` or ``maxpool``, its ``block``) and written back through the epilogue by
    ``write_back_at(sch, block, loop)``; with a padding stage (``pad``, else None), a channel per task, its
    padded image made once. Where the target lacks ``packed_layouts.TAPS_FEATURES`` (``native`` False: a
    kernel built for another CPU than the one the layout was chosen for), the same tiles in LLVM's own
    vector code."""
    annotations = sch.get(block).annotations
    batch, channel, row, col, i, j = sch.get_loops(block)
    kernel = (int(sch.get(i).extent), int(sch.get(j).extent))
    stride = (int(annotations[ROW_STRIDE]), int(annotations[COLUMN_STRIDE]))
    rows, width = int(sch.get(row).extent), int(sch.get(col).extent)
    tile = DepthwiseTile(tile_rows(rows), width, kernel, stride, int(annotations[INPUT_PITCH]))
    if pad is not None and native and kind == "depthwise" and rows > 1:
        image = _padded_image(sch, pad)
        whole = DepthwiseTile(rows, width, kernel, stride, image.width, image)
        if fits_one_kernel(whole):  # the padding in the kernel's lanes, no padded copy: 1152 channels 5x5 at
            # 7x7 33.5 -> 21.6 us, 3x3 24.7 -> 16.8 (accumulation alone, the copy's stores were read back at once)
            sch.compute_inline(pad)
            tile, pad = whole, None
    if tile.padding is not None:  # the whole channel one tile, one task
        outer = sch.fuse(batch, channel)
        write_back_at(sch, block, outer)
    elif pad is None:
        outer, row = sch.split(row, [None, tile.rows])
        outer = sch.fuse(batch, channel, outer)
        write_back_at(sch, block, outer)
    else:  # a channel per task, its padded image made once (per tile, the rows tiles share were made twice:
        # 3x3 pad 1, 32 channels at 112x112 69 -> 51 us, 144 at 56x56 85 -> 73 us, alone, interleaved)
        outer, row = sch.split(row, [None, tile.rows])
        write_back_at(sch, block, outer)
        outer = sch.fuse(batch, channel)
        sch.compute_at(pad, outer)
        if native:  # (TIR's vectorized if_then_else went byte by byte; 144 channels 3x3 at 56x56 69 -> 59 us)
            sch.tensorize(sch.get_loops(pad)[-2], pad_intrinsic(_padded_image(sch, pad)))
        else:
            sch.vectorize(sch.get_loops(pad)[-1])
    _vectors_of_sixteen(sch, sch.get_consumers(block)[0], block)
    sch.parallel(outer)
    if native and kind == "depthwise":
        _tensorize_from_zero(sch, block, row if tile.rows > 1 else col, intrinsic(tile, kind))
        return
    init = sch.decompose_reduction(block, row)
    sch.vectorize(sch.fuse(*sch.get_loops(init)[-2:]))
    if native:
        sch.tensorize(row if tile.rows > 1 else col, intrinsic(tile, kind))
    else:  # the filter taps outermost: LLVM vectorizes the tile's rows of columns
        sch.reorder(i, j, row, col)


KERNEL_ZEROES = "qc.kernel_zeroes"  # a tensorized block whose kernel writes its whole output from 0


def _tensorize_from_zero(sch: s_tir.Schedule, block, loop, name: str) -> None:
    """Tensorize ``block`` at ``loop`` with a kernel whose sums start at 0 (its description holds the
    reduction's init, so the tile is not zeroed and read back: 1152 channels 3x3 at 7x7, accumulation alone,
    16.8 -> 11.1 us). TVM keeps the init in the tensorized block, where LLVM makes it a ``memset`` of every
    tile (15% of 96 channels 3x3/2 at 112x112): the block is marked and ``without_kernel_inits`` drops it."""
    name_hint = sch.get(block).name_hint
    sch.tensorize(loop, name)
    sch.annotate(sch.get_sblock(f"{name_hint}_o"), KERNEL_ZEROES, 1)


def without_kernel_inits(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """``func`` with the init of each ``KERNEL_ZEROES`` block dropped: its kernel writes every element it
    accumulates, from 0 (``_column_block``), so the zeroing is dead."""
    def drop(block):
        if KERNEL_ZEROES not in block.annotations or block.init is None:
            return block
        return s_tir.SBlock(block.iter_vars, block.reads, block.writes, block.name_hint, block.body, None,
                            block.alloc_buffers, block.match_buffers, block.annotations)

    return func.with_body(structural_map(func.body, [(s_tir.SBlock, drop)]))


def _padded_image(sch: s_tir.Schedule, pad) -> PaddedImage:
    """What a layout's ``pad`` block makes of a channel (its shape, the data's, the offset and the fill)."""
    stage = sch.get(pad)
    data = stage.reads[0].source
    height, width = (int(d) for d in data.shape[-2:])
    rows, cols = (int(d) for d in stage.writes[0].source.shape[-2:])
    value = stage.body.value  # if_then_else(inside, data[..., y - top, x - left], fill)
    top, left = (_offset(index) for index in value.args[1].indices[-2:])
    return PaddedImage(height, width, top, left, rows, cols, int(value.args[2].value))


def _offset(index) -> int:
    """k of an index ``v - k`` (or ``v + -k``, or ``v``: 0)."""
    if isinstance(index, tvm.tirx.Sub):
        return int(index.b.value)
    if isinstance(index, tvm.tirx.Add):
        return -int(index.b.value)
    return 0


def _vectors_of_sixteen(sch: s_tir.Schedule, write_back, block) -> None:
    """The write-back's rows and columns as one loop of 16-lane vectors where they divide into them (a tile's
    rows are whole rows: contiguous in the accumulators and in the output): a 56-wide row vectorized whole
    is seven int64 vectors per step of the requantize, and LLVM spills them. A tile of one row (its row loop
    gone) keeps its one vectorized loop."""
    shared = sch.get_loops(block)
    own = [loop for loop in sch.get_loops(write_back) if not any(sch.get(loop).same_as(sch.get(s)) for s in shared)]
    if len(own) != 2:
        return
    rows, cols = own
    if (_extent(sch, rows) * _extent(sch, cols)) % LANES == 0:
        _, lanes = sch.split(sch.fuse(rows, cols), [None, LANES])
        sch.vectorize(lanes)


def _extent(sch: s_tir.Schedule, loop) -> int:
    return int(sch.get(loop).extent)
