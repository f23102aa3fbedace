"""Network executor vs torch reference ops: convolution, deconvolution, pooling, resize, activation,
normalization, scale, parametric ReLU and padding layers built with the TensorRT API."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


def _conv_net(
    net, x, weight, bias, *, stride=(1, 1), pad=(0, 0), dilation=(1, 1), groups=1, deconv=False, kernel_input=False
):
    """A (de)convolution whose kernel is either weights or input 1 (int8 constant -> dequantize)."""
    trt = net.trt
    inp = net.input("x", tuple(x.shape))
    add = net.network.add_deconvolution_nd if deconv else net.network.add_convolution_nd
    maps = weight.shape[1] * groups if deconv else weight.shape[0]
    kernel = trt.Weights() if kernel_input else net.weights(weight)
    layer = add(inp, maps, tuple(weight.shape[2:]), kernel, net.weights(bias) if bias is not None else trt.Weights())
    layer.stride_nd, layer.padding_nd, layer.dilation_nd, layer.num_groups = stride, pad, dilation, groups
    if kernel_input:
        axis = 1 if deconv else 0
        scale = weight.abs().amax(dim=[d for d in range(weight.dim()) if d != axis]) / 127
        shape = [1] * weight.dim()
        shape[axis] = -1
        q = torch.round(weight / scale.reshape(shape)).clamp(-128, 127).to(torch.int8)
        dq = net.network.add_dequantize(net.const(q), net.const(scale), trt.float32)
        dq.axis = axis
        layer.set_input(1, dq.get_output(0))
        weight = q.float() * scale.reshape(shape)
    return layer, weight


@pytest.mark.parametrize(
    "groups,stride,pad,dilation",
    [(1, (1, 1), (1, 1), (1, 1)), (2, (2, 2), (0, 1), (1, 1)), (4, (1, 2), (2, 2), (2, 2))],
)
@pytest.mark.parametrize("kernel_input", [False, True])
def test_convolution_matches_conv2d(net, close, groups, stride, pad, dilation, kernel_input):
    x = torch.randn(2, 4, 9, 10)
    w, b = torch.randn(8, 4 // groups, 3, 3), torch.randn(8)
    layer, w_used = _conv_net(
        net, x, w, b, stride=stride, pad=pad, dilation=dilation, groups=groups, kernel_input=kernel_input
    )
    out = net.run1({"x": x}, layer.get_output(0))
    close(out, F.conv2d(x, w_used, b, stride, pad, dilation, groups), atol=1e-4)


def test_convolution_3d_without_bias(net, close):
    x, w = torch.randn(1, 2, 5, 6, 7), torch.randn(3, 2, 3, 3, 3)
    layer, _ = _conv_net(net, x, w, None, stride=(1, 2, 1), pad=(1, 1, 0), dilation=(1, 1, 1))
    close(net.run1({"x": x}, layer.get_output(0)), F.conv3d(x, w, None, (1, 2, 1), (1, 1, 0)), atol=1e-4)


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
def test_convolution_same_padding(net, close, mode):
    x, w = torch.randn(1, 2, 7, 8), torch.randn(3, 2, 4, 4)
    layer, _ = _conv_net(net, x, w, None, stride=(2, 2))
    layer.padding_mode = getattr(net.trt.PaddingMode, mode)
    # 7 -> out 4, total pad 3+... worked by hand: rows need (4-1)*2+4-7 = 3, cols (4-1)*2+4-8 = 2.
    pads = (1, 1, 1, 2) if mode == "SAME_UPPER" else (1, 1, 2, 1)
    close(net.run1({"x": x}, layer.get_output(0)), F.conv2d(F.pad(x, pads), w, None, 2), atol=1e-4)


def test_convolution_asymmetric_pre_post_padding(net, close):
    x, w = torch.randn(1, 2, 6, 6), torch.randn(3, 2, 3, 3)
    layer, _ = _conv_net(net, x, w, None)
    layer.pre_padding, layer.post_padding = (0, 2), (1, 0)
    close(net.run1({"x": x}, layer.get_output(0)), F.conv2d(F.pad(x, (2, 0, 0, 1)), w), atol=1e-4)


@pytest.mark.parametrize(
    "groups,stride,pad,dilation",
    [(1, (2, 2), (0, 0), (1, 1)), (2, (2, 2), (1, 1), (1, 1)), (1, (3, 2), (1, 0), (2, 1))],
)
@pytest.mark.parametrize("kernel_input", [False, True])
def test_deconvolution_matches_conv_transpose2d(net, close, groups, stride, pad, dilation, kernel_input):
    x = torch.randn(2, 4, 5, 6)
    w, b = torch.randn(4, 6 // groups, 3, 4), torch.randn(6)
    layer, w_used = _conv_net(
        net, x, w, b, stride=stride, pad=pad, dilation=dilation, groups=groups, deconv=True, kernel_input=kernel_input
    )
    expected = F.conv_transpose2d(x, w_used, b, stride, pad, 0, groups, dilation)
    close(net.run1({"x": x}, layer.get_output(0)), expected, atol=1e-4)


def test_deconvolution_negative_post_padding_is_output_padding(net, close):
    x, w, b = torch.randn(1, 3, 4, 4), torch.randn(3, 2, 3, 3), torch.randn(2)
    layer, _ = _conv_net(net, x, w, b, stride=(2, 2), deconv=True)
    layer.pre_padding, layer.post_padding = (1, 1), (0, 0)  # PyTorch padding=1, output_padding=1
    expected = F.conv_transpose2d(x, w, b, 2, 1, output_padding=1)
    close(net.run1({"x": x}, layer.get_output(0)), expected, atol=1e-4)


@pytest.mark.parametrize(
    "kind,window,stride,pad",
    [("MAX", (3, 3), (2, 2), (1, 1)), ("AVERAGE", (2, 2), (2, 2), (0, 0)), ("AVERAGE", (3, 3), (1, 2), (1, 1))],
)
@pytest.mark.parametrize("exclude", [True, False])
def test_pooling_matches_torch(net, close, kind, window, stride, pad, exclude):
    x = torch.randn(2, 3, 9, 8)
    layer = net.network.add_pooling_nd(net.input("x", x.shape), getattr(net.trt.PoolingType, kind), window)
    layer.stride_nd, layer.padding_nd, layer.average_count_excludes_padding = stride, pad, exclude
    if kind == "MAX":
        expected = F.max_pool2d(x, window, stride, pad)
    else:
        expected = F.avg_pool2d(x, window, stride, pad, count_include_pad=not exclude)
    close(net.run1({"x": x}, layer.get_output(0)), expected)


@pytest.mark.parametrize("kind", ["MAX", "AVERAGE"])
def test_pooling_round_up_is_ceil_mode(net, close, kind):
    x = torch.randn(1, 2, 7, 8)
    layer = net.network.add_pooling_nd(net.input("x", x.shape), getattr(net.trt.PoolingType, kind), (3, 3))
    layer.stride_nd, layer.padding_mode = (2, 2), net.trt.PaddingMode.EXPLICIT_ROUND_UP
    pool = F.max_pool2d if kind == "MAX" else F.avg_pool2d
    close(net.run1({"x": x}, layer.get_output(0)), pool(x, 3, 2, ceil_mode=True))


def test_pooling_3d_and_blend(net, close):
    x = torch.randn(1, 2, 4, 6, 6)
    inp = net.input("x", x.shape)
    max3 = net.network.add_pooling_nd(inp, net.trt.PoolingType.MAX, (2, 2, 2))
    max3.stride_nd = (2, 2, 2)
    blend = net.network.add_pooling_nd(inp, net.trt.PoolingType.MAX_AVERAGE_BLEND, (2, 2, 2))
    blend.stride_nd, blend.blend_factor = (2, 2, 2), 0.25
    got_max, got_blend = net.run({"x": x}, max3.get_output(0), blend.get_output(0))
    close(got_max, F.max_pool3d(x, 2))
    close(got_blend, 0.75 * F.max_pool3d(x, 2) + 0.25 * F.avg_pool3d(x, 2))


def _resize(net, x, mode, coord, *, rounding="FLOOR", scales=None, shape=None):
    trt = net.trt
    layer = net.network.add_resize(net.input("x", x.shape))
    layer.resize_mode = getattr(trt.InterpolationMode, mode)
    layer.coordinate_transformation = getattr(trt.ResizeCoordinateTransformation, coord)
    layer.nearest_rounding = getattr(trt.ResizeRoundMode, rounding)
    if scales is not None:
        layer.scales = scales
    else:
        layer.shape = shape
    return net.run1({"x": x}, layer.get_output(0))


def test_resize_nearest_scales_and_shape(net, make_net, close):
    x = torch.randn(1, 3, 5, 6)
    close(_resize(net, x, "NEAREST", "ASYMMETRIC", scales=[1, 1, 2, 2]), F.interpolate(x, scale_factor=2))
    close(_resize(make_net(), x, "NEAREST", "ASYMMETRIC", shape=(1, 3, 7, 13)), F.interpolate(x, size=(7, 13)))


def test_resize_nearest_half_pixel_half_up_is_nearest_exact(net, close):
    x = torch.randn(1, 2, 5, 7)
    got = _resize(net, x, "NEAREST", "HALF_PIXEL", rounding="HALF_UP", shape=(1, 2, 8, 3))
    close(got, F.interpolate(x, size=(8, 3), mode="nearest-exact"))


@pytest.mark.parametrize("coord,align", [("HALF_PIXEL", False), ("ALIGN_CORNERS", True)])
@pytest.mark.parametrize("mode,torch_mode", [("LINEAR", "bilinear"), ("CUBIC", "bicubic")])
def test_resize_linear_and_cubic(net, close, coord, align, mode, torch_mode):
    x = torch.randn(2, 3, 6, 5)
    got = _resize(net, x, mode, coord, shape=(2, 3, 11, 9))
    close(got, F.interpolate(x, size=(11, 9), mode=torch_mode, align_corners=align), atol=1e-5)


_ACTIVATIONS = {
    "RELU": (0, 0, torch.relu),
    "SIGMOID": (0, 0, torch.sigmoid),
    "TANH": (0, 0, torch.tanh),
    "LEAKY_RELU": (0.2, 0, lambda x: F.leaky_relu(x, 0.2)),
    "ELU": (0.7, 0, lambda x: F.elu(x, 0.7)),
    "SELU": (1.6732632423543772, 1.0507009873554805, F.selu),
    "SOFTSIGN": (0, 0, F.softsign),
    "SOFTPLUS": (0.5, 2.0, lambda x: F.softplus(x, beta=2.0)),
    "CLIP": (-0.5, 0.7, lambda x: x.clamp(-0.5, 0.7)),
    "HARD_SIGMOID": (1 / 6, 0.5, F.hardsigmoid),
    "SCALED_TANH": (1.5, 0.5, lambda x: 1.5 * torch.tanh(0.5 * x)),
    "THRESHOLDED_RELU": (0.3, 0, lambda x: F.threshold(x, 0.3, 0.0)),
    "GELU_ERF": (0, 0, F.gelu),
    "GELU_TANH": (0, 0, lambda x: F.gelu(x, approximate="tanh")),
}


@pytest.mark.parametrize("kind", sorted(_ACTIVATIONS))
def test_activation_kinds(net, close, kind):
    alpha, beta, reference = _ACTIVATIONS[kind]
    x = torch.randn(2, 3, 4) * 3
    layer = net.network.add_activation(net.input("x", x.shape), getattr(net.trt.ActivationType, kind))
    layer.alpha, layer.beta = alpha, beta
    close(net.run1({"x": x}, layer.get_output(0)), reference(x), atol=1e-5)


def test_activation_enum_names_are_all_covered(trt):
    from fx2trt_pipeline.executor.executor_layers import _ACTIVATIONS as IMPLEMENTED

    assert set(trt.ActivationType.__members__) <= set(IMPLEMENTED)


def test_parametric_relu(net, close):
    x, slope = torch.randn(2, 4, 3, 3), torch.rand(1, 4, 1, 1)
    layer = net.network.add_parametric_relu(net.input("x", x.shape), net.const(slope))
    close(net.run1({"x": x}, layer.get_output(0)), F.prelu(x, slope.reshape(-1)))


def test_normalization_layer_norm_and_group_norm(net, close):
    x = torch.randn(2, 6, 4, 5)
    inp = net.input("x", x.shape)
    ln_w, ln_b = torch.randn(1, 1, 4, 5), torch.randn(1, 1, 4, 5)
    ln = net.network.add_normalization(inp, net.const(ln_w), net.const(ln_b), 1 << 2 | 1 << 3)
    ln.epsilon = 1e-5
    gn_w, gn_b = torch.randn(1, 6, 1, 1), torch.randn(1, 6, 1, 1)
    gn = net.network.add_normalization_v2(inp, net.const(gn_w), net.const(gn_b), 1 << 2 | 1 << 3)
    gn.num_groups, gn.epsilon = 3, 1e-5
    got_ln, got_gn = net.run({"x": x}, ln.get_output(0), gn.get_output(0))
    close(got_ln, F.layer_norm(x, (4, 5), ln_w[0, 0], ln_b[0, 0], 1e-5), atol=1e-5)
    close(got_gn, F.group_norm(x, 3, gn_w.reshape(-1), gn_b.reshape(-1), 1e-5), atol=1e-5)


@pytest.mark.parametrize("mode", ["UNIFORM", "CHANNEL", "ELEMENTWISE"])
def test_scale_modes(net, close, mode):
    x = torch.rand(2, 3, 4, 4) + 0.5
    shape = {"UNIFORM": (1,), "CHANNEL": (3,), "ELEMENTWISE": (3, 4, 4)}[mode]
    shift, scale, power = torch.randn(shape), torch.rand(shape) + 0.5, torch.full(shape, 2.0)
    layer = net.network.add_scale(
        net.input("x", x.shape),
        getattr(net.trt.ScaleMode, mode),
        net.weights(shift),
        net.weights(scale),
        net.weights(power),
    )
    bshape = {"UNIFORM": (), "CHANNEL": (1, 3, 1, 1), "ELEMENTWISE": (1, 3, 4, 4)}[mode]
    expected = (x * scale.reshape(bshape) + shift.reshape(bshape)) ** 2
    close(net.run1({"x": x}, layer.get_output(0)), expected, atol=1e-5)


def test_padding_pads_and_crops(net, close):
    x = torch.randn(1, 2, 5, 5)
    layer = net.network.add_padding_nd(net.input("x", x.shape), (1, -1), (2, 0))
    close(net.run1({"x": x}, layer.get_output(0)), F.pad(x, (-1, 0, 1, 2)))


def test_average_pool_ceil_mode_with_padding_counts_like_torch(net, close):
    x = torch.randn(1, 2, 8, 8)
    layer = net.network.add_pooling_nd(net.input("x", x.shape), net.trt.PoolingType.AVERAGE, (3, 3))
    layer.stride_nd, layer.padding_nd = (2, 2), (1, 1)
    layer.padding_mode, layer.average_count_excludes_padding = net.trt.PaddingMode.EXPLICIT_ROUND_UP, False
    expected = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=True)
    close(net.run1({"x": x}, layer.get_output(0)), expected)


def test_resize_to_the_shape_of_another_tensor(net, close):
    """The converter pattern for ``F.interpolate(x, size=skip.shape[2:])``: a shape tensor as input 1."""
    x, skip = torch.randn(2, 3, 4, 5), torch.randn(2, 7, 9, 11)
    ix, iskip = net.input("x", (-1, 3, 4, 5)), net.input("skip", (-1, 7, -1, -1))
    x_shape = net.network.add_slice(net.network.add_shape(ix).get_output(0), (0,), (2,), (1,))
    skip_hw = net.network.add_slice(net.network.add_shape(iskip).get_output(0), (2,), (2,), (1,))
    size = net.network.add_concatenation([x_shape.get_output(0), skip_hw.get_output(0)])
    layer = net.network.add_resize(ix)
    layer.set_input(1, size.get_output(0))
    layer.resize_mode = net.trt.InterpolationMode.LINEAR
    layer.coordinate_transformation = net.trt.ResizeCoordinateTransformation.HALF_PIXEL
    out = net.run1({"x": x, "skip": skip}, layer.get_output(0))
    close(out, F.interpolate(x, size=(9, 11), mode="bilinear", align_corners=False))


def test_resize_single_pixel_selector_upper(net, close):
    x = torch.randn(1, 1, 4, 6)
    layer = net.network.add_resize(net.input("x", x.shape))
    layer.shape = (1, 1, 1, 3)
    layer.resize_mode = net.trt.InterpolationMode.LINEAR
    layer.coordinate_transformation = net.trt.ResizeCoordinateTransformation.HALF_PIXEL
    layer.selector_for_single_pixel = net.trt.ResizeSelector.UPPER
    out = net.run1({"x": x}, layer.get_output(0))
    # Rows: the one output row takes input row 0; columns: half-pixel linear 6 -> 3.
    close(out, F.interpolate(x[:, :, :1], size=(1, 3), mode="bilinear", align_corners=False))
