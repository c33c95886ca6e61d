"""pack_int8_layers: give each uint8 x int8 layer a kernel with a layout made for integer dot products.

Requires: the integer module of ``lower_integer``: ``relax.matmul(data: uint8[..., K], W: int8 const [K, N],
out_dtype="int32")`` and ``relax.nn.conv2d(data: uint8 NCHW, W: int8 const OIHW, out_dtype="int32")`` with
groups 1 and batch 1. Run before ``legalize_ops``.
Guarantees: each such layer becomes one kernel with the same int32 result, bit for bit, whose reduction runs
in groups of four (the shape of ``vpdpbusd`` and of the ``backends.x86_int8`` schedules):

- matmul (K % 4 == 0): ``acc[m, n] = sum_k data[m, k] * P[n // 16, k // 4, n % 16, k % 4]`` with P the
  weight packed once here ([N/16, K/4, 16, 4], 64 contiguous bytes per step; N padded to 16 with zero
  columns, which ``out[m, n] = acc[m, n]`` drops);
- conv2d: ``col[r // 4, p, r % 4] = data[c, y*sy + i*dy - top, x*sx + j*dx - left]`` (0 outside the image
  and past the ends; r = (c*KH + i)*KW + j, p = y*OW + x, both padded to a multiple of 4 and 16; gathered
  from the image laid out flat with its padding, through an int32 table of each r's offset computed here), then
  ``acc[o, p] = sum_r col[r // 4, p, r % 4] * W'[o, r]`` with W' the flattened, zero-padded weight, then
  ``out[0, o, y, x] = acc[o, y*OW + x]``.

- depthwise conv2d: the same arithmetic as ``conv2d`` with the zero padding made a stage of its own, so the
  backend can vectorize along output columns (no packing: each output reads one filter).

Everything else (int8 activations, grouped convolutions, a K that is not a multiple of 4) is left as it is. Numerics: padding the reduction with zero weights adds 0; padding with real zeros matches
``conv2d``'s own padding only when the activation zero point is 0, which ``lower_integer`` guarantees (it pads
explicitly with the zero point otherwise, leaving conv2d's padding 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .dataflow import op_name
from .registry import register_pass

MATMUL_BLOCK, CONV_BLOCK, IM2COL_BLOCK = "qc_int8_matmul", "qc_int8_conv", "qc_int8_im2col"
DEPTHWISE_BLOCK, PAD_BLOCK = "qc_int8_depthwise", "qc_int8_pad"
LANES, GROUP = 16, 4
KERNEL_ATTRIBUTE = "qc.int8_layout"  # on a packed kernel: what it computes, for the reference interpreter
IMAGE_SHAPE = "qc.image_shape"  # on the flat padded image stage: (channels, padded height, padded width)
COLUMN_STRIDE = "qc.column_stride"  # on a depthwise block: its horizontal stride
OUTPUT_WIDTH = "qc.output_width"  # on an im2col block: the output row length its pixel loop splits by
LAYER_NAME = re.compile(r"(conv2d|matmul)_\d+")  # a layer of the quantization plan, as lower_integer names it
OUT_ELEMWISE_FUSABLE = 4  # relax's OpPatternKind: fusion may append the elementwise epilogue (the gathers
# through an offset table would otherwise make annotate_op_pattern call the kernel opaque)


def pack_matmul_weight(weight: np.ndarray) -> np.ndarray:
    """[K, N] int8 -> [N'/16, K/4, 16, 4] with N' = N rounded up to 16 (zero columns):
    ``P[a, b, c, d] = W[4b + d, 16a + c]``."""
    k, n = weight.shape
    padded = np.pad(weight, ((0, 0), (0, -n % LANES)))
    return np.ascontiguousarray(padded.T.reshape(-1, LANES, k // GROUP, GROUP).transpose(0, 2, 1, 3))


def flatten_conv_weight(weight: np.ndarray) -> np.ndarray:
    """OIHW int8 -> [O, R4] with R4 = C*KH*KW rounded up to a multiple of 4 (zeros past the end)."""
    out = weight.reshape(weight.shape[0], -1)
    pad = -out.shape[1] % GROUP
    return np.ascontiguousarray(np.pad(out, ((0, 0), (0, pad)))) if pad else np.ascontiguousarray(out)


def matmul_packed(data, packed, n_size):
    """TE: ``data[..., K] @ W[K, n_size]`` with W packed by ``pack_matmul_weight``; int32 result."""
    from tvm import te

    padded = int(packed.shape[0]) * LANES
    k = te.reduce_axis((0, int(data.shape[-1])), "k")

    def compute(*index):
        n = index[-1]
        return te.sum(data[tuple(index[:-1]) + (k,)].astype("int32")
                      * packed[n // LANES, k // GROUP, n % LANES, k % GROUP].astype("int32"), axis=k)

    acc = te.compute(tuple(data.shape[:-1]) + (padded,), compute, name=MATMUL_BLOCK)
    if padded == n_size:
        return acc
    return te.compute(tuple(data.shape[:-1]) + (n_size,), lambda *index: acc[index], name="qc_int8_columns")


@dataclass(frozen=True)
class ConvGeometry:
    """A conv2d's shapes (batch 1, groups 1) and the offset table that makes its im2col division-free."""

    channels: int
    height: int
    width: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int]

    @property
    def padded(self) -> tuple[int, int]:
        top, left, bottom, right = self.padding
        return self.height + top + bottom, self.width + left + right

    @property
    def out(self) -> tuple[int, int]:
        (ph, pw), (kh, kw), (sy, sx), (dy, dx) = self.padded, self.kernel, self.strides, self.dilation
        return (ph - (kh - 1) * dy - 1) // sy + 1, (pw - (kw - 1) * dx - 1) // sx + 1

    @property
    def pointwise(self) -> bool:
        """A 1x1 convolution with stride 1 and no padding: im2col reads the image as it is, no copy first."""
        return self.kernel == (1, 1) and self.strides == (1, 1) and not any(self.padding)

    @property
    def padded_pixels(self) -> int:
        """Output pixels rounded up to a multiple of 16 (the lanes of a step)."""
        oh, ow = self.out
        return -(-oh * ow // LANES) * LANES

    def reduce_offsets(self) -> np.ndarray:
        """int32 [R rounded up to 4]: where reduction element r = (c*KH + i)*KW + j sits in a window."""
        (ph, pw), (kh, kw), (dy, dx) = self.padded, self.kernel, self.dilation
        c, i, j = np.meshgrid(np.arange(self.channels), np.arange(kh), np.arange(kw), indexing="ij")
        offsets = (c * ph * pw + i * dy * pw + j * dx).ravel()
        return np.pad(offsets, (0, -offsets.size % GROUP)).astype(np.int32)


def conv2d_im2col(data, flat, reduce_offsets, geometry: ConvGeometry):
    """TE: NCHW conv2d (batch 1, groups 1) of uint8 ``data`` with the flattened weight, via im2col in groups
    of four; int32 NCHW result. The image is first laid out flat with its zero padding (``qc_int8_pad``), so
    gathering a column is a table lookup (hoisted out of the pixel loops) and an add; the pixel's row and
    column (``p // OW``, ``p % OW``) become loop variables once the schedule splits ``p`` by OW. A pointwise
    convolution (1x1, stride 1, unpadded) gathers from the image directly."""
    from tvm import te, tirx

    g = geometry
    (ph, pw), (oh, ow) = g.padded, g.out
    top, left = g.padding[:2]
    reduce, pixels = g.channels * g.kernel[0] * g.kernel[1], oh * ow

    def pad(f):
        c, y, x = f // (ph * pw), f % (ph * pw) // pw - top, f % pw - left
        inside = tirx.all(y >= 0, y < g.height, x >= 0, x < g.width)
        return tirx.if_then_else(inside, data[0, c, y, x], tirx.const(0, data.dtype))

    if g.pointwise:  # the image is its own im2col: column r of pixel p is data[r, p // OW, p % OW]
        def gather(r4, p, t):
            r = r4 * GROUP + t
            inside = tirx.all(r < reduce, p < pixels)
            return tirx.if_then_else(inside, data[0, r, p // ow, p % ow], tirx.const(0, data.dtype))
    else:
        image = te.compute((g.channels * ph * pw,), pad, name=PAD_BLOCK, attrs={IMAGE_SHAPE: [g.channels, ph, pw]})

        def gather(r4, p, t):
            r = r4 * GROUP + t
            inside = tirx.all(r < reduce, p < pixels)
            start = p // ow * (g.strides[0] * pw) + p % ow * g.strides[1]
            return tirx.if_then_else(inside, image[start + reduce_offsets[r]], tirx.const(0, data.dtype))

    groups4, padded_pixels = int(flat.shape[1]) // GROUP, g.padded_pixels
    col = te.compute((groups4, padded_pixels, GROUP), gather, name=IM2COL_BLOCK, attrs={OUTPUT_WIDTH: ow})
    r = te.reduce_axis((0, groups4 * GROUP), "r")
    acc = te.compute((int(flat.shape[0]), padded_pixels),
                     lambda o, p: te.sum(col[r // GROUP, p, r % GROUP].astype("int32") * flat[o, r].astype("int32"),
                                         axis=r), name=CONV_BLOCK)
    return te.compute((1, int(flat.shape[0]), oh, ow), lambda b, o, y, x: acc[o, y * ow + x], name="qc_int8_nchw")


def depthwise_conv2d(data, weight, strides, padding, dilation):
    """TE: NCHW depthwise conv2d (batch 1, one filter per channel) of uint8 ``data``; int32 NCHW result.
    Zero padding is materialised first (a ``qc_int8_pad`` stage), so the inner loop has no bounds tests."""
    from tvm import te, tirx

    _, channels, height, width = (int(d) for d in data.shape)
    kh, kw = (int(d) for d in weight.shape[2:])
    (sy, sx), (dy, dx) = strides, dilation
    top, left, bottom, right = padding
    oh = (height + top + bottom - (kh - 1) * dy - 1) // sy + 1
    ow = (width + left + right - (kw - 1) * dx - 1) // sx + 1
    source = data
    if any(padding):
        def pad(b, c, y, x):
            inside = tirx.all(y >= top, y < top + height, x >= left, x < left + width)
            return tirx.if_then_else(inside, data[b, c, y - top, x - left], tirx.const(0, data.dtype))

        source = te.compute((1, channels, height + top + bottom, width + left + right), pad, name=PAD_BLOCK)
    i, j = te.reduce_axis((0, kh), "i"), te.reduce_axis((0, kw), "j")
    return te.compute(
        (1, channels, oh, ow),
        lambda b, c, y, x: te.sum(source[b, c, y * sy + i * dy, x * sx + j * dx].astype("int32")
                                  * weight[c, 0, i, j].astype("int32"), axis=[i, j]),
        name=DEPTHWISE_BLOCK, attrs={COLUMN_STRIDE: sx})


def matmul_kernel(m: int, k: int, n: int):
    """A standalone ``[m, k] uint8 @ packed int8 -> [m, n] int32`` PrimFunc (benchmarks and tests)."""
    from tvm import te

    data = te.placeholder((m, k), "uint8", "data")
    packed = te.placeholder((-(-n // LANES), k // GROUP, LANES, GROUP), "int8", "packed")
    return te.create_prim_func([data, packed, matmul_packed(data, packed, n)])


def conv_kernel(geometry: ConvGeometry, out_channels: int):
    """A standalone conv2d PrimFunc taking (data, flattened weight, reduce offsets) -> int32 NCHW."""
    from tvm import te

    g = geometry
    data = te.placeholder((1, g.channels, g.height, g.width), "uint8", "data")
    flat = te.placeholder((out_channels, -(-g.channels * g.kernel[0] * g.kernel[1] // GROUP) * GROUP), "int8", "flat")
    reduce = te.placeholder(g.reduce_offsets().shape, "int32", "reduce")
    return te.create_prim_func([data, flat, reduce, conv2d_im2col(data, flat, reduce, g)])


@mutator
class _Packer(PyExprMutator):
    """Each kernel is named after its binding when that is a layer name (``lower_integer`` names the
    accumulators ``conv2d_3`` / ``matmul_0``), e.g. ``conv2d_3_u8i8``; fusion keeps it in the fused kernel's
    name (``fused_conv2d_3_u8i8_add_...``), which is how ``compiler.profile`` finds a kernel's layer."""

    def __init__(self, mod=None):
        super().__init__(mod)
        self.binding = ""

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # noqa: N802  (TVM's visitor naming)
        self.binding = binding.var.name
        super().visit_var_binding_(binding)

    def _name(self, kind: str) -> str:
        return f"{self.binding}_u8i8" if LAYER_NAME.fullmatch(self.binding) else f"{kind}_u8i8"

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802  (TVM's visitor naming)
        call = super().visit_call_(call)
        name = op_name(call)
        if name == "relax.matmul" and _packable_matmul(call):
            weight = call.args[1].value.numpy()
            info = {"op": "matmul", "weight_shape": list(weight.shape)}
            return self.builder_.call_te(matmul_packed, call.args[0], relax.const(pack_matmul_weight(weight)),
                                         weight.shape[1], primfunc_name_hint=self._name("matmul"),
                                         primfunc_attrs={KERNEL_ATTRIBUTE: info, "op_pattern": OUT_ELEMWISE_FUSABLE})
        if name == "relax.nn.conv2d" and _packable_conv(call):
            weight = call.args[1].value.numpy()
            geometry = _geometry(call)
            info = {"op": "conv2d", "weight_shape": list(weight.shape), "strides": list(geometry.strides),
                    "padding": list(geometry.padding), "dilation": list(geometry.dilation)}
            return self.builder_.call_te(partial(conv2d_im2col, geometry=geometry), call.args[0],
                                         relax.const(flatten_conv_weight(weight)),
                                         relax.const(geometry.reduce_offsets()), primfunc_name_hint=self._name("conv2d"),
                                         primfunc_attrs={KERNEL_ATTRIBUTE: info, "op_pattern": OUT_ELEMWISE_FUSABLE})
        if name == "relax.nn.conv2d" and _depthwise(call):
            attrs = call.attrs
            strides, padding, dilation = ([int(v) for v in attrs.strides], [int(v) for v in attrs.padding],
                                          [int(v) for v in attrs.dilation])
            return self.builder_.call_te(depthwise_conv2d, call.args[0], call.args[1], strides, padding, dilation,
                                         primfunc_name_hint=self._name("conv2d_depthwise"),
                                         primfunc_attrs={"op_pattern": OUT_ELEMWISE_FUSABLE})
        return call


def _geometry(call: relax.Call) -> ConvGeometry:
    attrs, shape = call.attrs, [int(d) for d in call.args[0].ty.shape]
    pair = lambda values: tuple(int(v) for v in values)  # noqa: E731
    return ConvGeometry(shape[1], shape[2], shape[3], pair(call.args[1].value.numpy().shape[2:]), pair(attrs.strides),
                        pair(attrs.padding), pair(attrs.dilation))


def _depthwise(call: relax.Call) -> bool:
    """One filter per channel (groups == channels == filters), NCHW, batch 1."""
    attrs = call.attrs
    if not (_integer_layer(call) and attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW"
            and attrs.out_layout == "NCHW" and int(call.args[0].ty.shape[0]) == 1):
        return False
    channels, filters = int(call.args[0].ty.shape[1]), call.args[1].value.numpy().shape
    return int(attrs.groups) == channels == filters[0] and filters[1] == 1


def _integer_layer(call: relax.Call) -> bool:
    """uint8 activations x a constant int8 weight, accumulated in int32."""
    data, weight = call.args[0], call.args[1]
    return (isinstance(weight, tvm.ir.expr.GenericConst) and str(weight.value.dtype) == "int8"
            and str(data.ty.dtype) == "uint8" and str(call.attrs.out_dtype) == "int32")


def _packable_matmul(call: relax.Call) -> bool:
    if not _integer_layer(call) or call.args[1].value.numpy().ndim != 2:
        return False
    k = call.args[1].value.numpy().shape[0]
    return k % GROUP == 0 and int(call.args[0].ty.shape[-1]) == k


def _packable_conv(call: relax.Call) -> bool:
    attrs = call.attrs
    return (_integer_layer(call) and int(attrs.groups) == 1 and attrs.data_layout == "NCHW"
            and attrs.kernel_layout == "OIHW" and attrs.out_layout == "NCHW"
            and int(call.args[0].ty.shape[0]) == 1)


@register_pass("pack_int8_layers")
def pack_int8_layers(mod: tvm.IRModule) -> tvm.IRModule:
    """Relax -> Relax: uint8 x int8 matmul / conv2d layers become kernels over weights packed in groups of 4."""
    packer = _Packer(mod)
    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function):
            packer.builder_.update_func(gvar, packer.visit_expr(func))
    return packer.builder_.get()

