"""Tests for unpooling and transposed convolution (cv_course.ops.upsample,
cv_course.ops.conv_transpose): the lecture's worked examples with exact
numbers, agreement with torch (values and gradients), loop references,
gradcheck in float64, empty batches and error messages."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from cv_course.ops import (
    ConvTranspose2d,
    bed_of_nails_unpool,
    bilinear_kernel,
    conv_matrix,
    conv_transpose2d,
    max_unpool2d,
    nearest_unpool,
)

DTYPES = [torch.float32, torch.float64]


def _exact_reference():
    """Run torch's reference without cuDNN: on GPUs cuDNN may compute float32
    convolutions in TF32 (about 3 significant digits), our matmul does not."""
    return torch.backends.cudnn.flags(enabled=False)


def _tol(dtype):
    return {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-9}


def _seed_2x2(device, dtype=torch.float32):
    return torch.tensor([[1.0, 2.0], [3.0, 4.0]], device=device, dtype=dtype)[None, None]


# ---------------------------------------------------------------- unpooling


def test_nearest_and_bed_of_nails_seed_example(device):
    x = _seed_2x2(device)
    nearest = nearest_unpool(x)[0, 0]
    nails = bed_of_nails_unpool(x)[0, 0]
    print("nearest neighbour:\n", nearest, "\nbed of nails:\n", nails)
    assert torch.equal(nearest, torch.tensor(
        [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]], device=device, dtype=x.dtype))
    assert torch.equal(nails, torch.tensor(
        [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]], device=device, dtype=x.dtype))


@pytest.mark.parametrize("scale", [1, 2, 3, (2, 3)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nearest_and_bed_of_nails_match_references(device, scale, dtype):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, device=device, dtype=dtype)
    sh, sw = (scale, scale) if isinstance(scale, int) else scale
    ref = F.interpolate(x, scale_factor=(sh, sw), mode="nearest")
    assert torch.equal(nearest_unpool(x, scale), ref)
    nails = bed_of_nails_unpool(x, scale)
    assert nails.shape == (2, 3, 4 * sh, 5 * sw) and nails.dtype == dtype
    expected = torch.zeros_like(nails)
    for h, w in itertools.product(range(4), range(5)):  # loop reference
        expected[:, :, h * sh, w * sw] = x[:, :, h, w]
    assert torch.equal(nails, expected)


def test_unpool_gradients_and_empty():
    x = torch.randn(1, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: nearest_unpool(t, (2, 3)), (x,))
    assert gradcheck(lambda t: bed_of_nails_unpool(t, 3), (x,))
    empty = torch.zeros(0, 3, 4, 4)
    assert nearest_unpool(empty).shape == (0, 3, 8, 8)
    assert bed_of_nails_unpool(empty).shape == (0, 3, 8, 8)


def test_unpool_bad_input():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        nearest_unpool(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="scale"):
        bed_of_nails_unpool(torch.zeros(1, 1, 2, 2), 0)


# ---------------------------------------------------------------- max unpooling

SEED_4X4 = [[1, 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]]


def test_max_unpool_seed_example(device):
    x = torch.tensor(SEED_4X4, device=device, dtype=torch.float32)[None, None]
    pooled, idx = F.max_pool2d(x, 2, stride=2, return_indices=True)
    assert torch.equal(pooled[0, 0], torch.tensor([[5.0, 6.0], [7.0, 8.0]], device=device))
    # The lecture unpools the values the rest of the network produced, [[1, 2], [3, 4]],
    # into the positions of the maxima 5, 6, 7, 8.
    out = max_unpool2d(_seed_2x2(device), idx, 2, stride=2)[0, 0]
    print("max unpooling of [[1, 2], [3, 4]]:\n", out)
    assert torch.equal(out, torch.tensor(
        [[0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 0, 0], [3, 0, 0, 4]], device=device, dtype=torch.float32))
    # Unpooling the pooled values themselves keeps only the maxima.
    back = max_unpool2d(pooled, idx, 2)[0, 0]
    assert torch.equal(back, torch.tensor(
        [[0, 0, 6, 0], [0, 5, 0, 0], [0, 0, 0, 0], [7, 0, 0, 8]], device=device, dtype=torch.float32))


# (input H, W, kernel, stride, padding, output_size)
UNPOOL_CASES = [
    ((6, 8), 2, None, 0, None),
    ((7, 5), 2, 2, 0, (7, 5)),  # odd sizes: output_size undoes pooling's floor
    ((7, 7), 3, 3, 1, None),  # padded pooling
    ((8, 6), (2, 3), (2, 3), 0, None),  # non-square
    ((8, 8), 3, 2, 1, [2, 3, 8, 8]),  # overlapping windows; 4-element output_size
]


@pytest.mark.parametrize("hw,k,s,p,size", UNPOOL_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_unpool_matches_torch(device, hw, k, s, p, size, dtype):
    torch.manual_seed(1)
    x = torch.randn(2, 3, *hw, device=device, dtype=dtype)
    pooled, idx = F.max_pool2d(x, k, stride=s, padding=p, return_indices=True)
    # Overlapping windows can pick the same max twice; unpooling the pooled values
    # then writes equal numbers to that position, so the result is still well defined.
    vals = pooled if s is not None and s != k else torch.randn_like(pooled)
    ours = max_unpool2d(vals, idx, k, s, p, size)
    ref = F.max_unpool2d(vals, idx, k, s, p, size)
    assert ours.shape == ref.shape and torch.equal(ours, ref)
    # Unbatched input, as torch allows.
    assert torch.equal(max_unpool2d(vals[0], idx[0], k, s, p, size), ref[0])


def test_max_unpool_gradcheck_and_empty(device):
    x = torch.randn(2, 2, 4, 6, device=device, dtype=torch.float64)
    pooled, idx = F.max_pool2d(x, 2, return_indices=True)
    v = torch.randn_like(pooled, requires_grad=True)
    assert gradcheck(lambda t: max_unpool2d(t, idx, 2), (v,))
    e_vals = torch.zeros(0, 3, 2, 2, device=device)
    e_idx = torch.zeros(0, 3, 2, 2, device=device, dtype=torch.int64)
    out = max_unpool2d(e_vals, e_idx, 2)
    assert out.shape == (0, 3, 4, 4) and out.device == e_vals.device


def test_max_unpool_bad_input():
    x = torch.randn(1, 1, 4, 4)
    pooled, idx = F.max_pool2d(x, 2, return_indices=True)
    with pytest.raises(ValueError, match="shape of input"):
        max_unpool2d(pooled, idx[..., :1], 2)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        max_unpool2d(pooled[0, 0], idx[0, 0], 2)
    with pytest.raises(ValueError, match="int64"):
        max_unpool2d(pooled, idx.int(), 2)
    with pytest.raises(ValueError, match="output_size"):
        max_unpool2d(pooled, idx, 2, output_size=(9, 4))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 16\)"):
        max_unpool2d(pooled, idx + 16, 2)


# ---------------------------------------------------------------- transposed convolution


def _loop_conv_transpose2d(x, w, b, s, p, op):
    """Obviously-correct reference: every input pixel adds a weighted kernel copy."""
    N, C, H, W = x.shape
    _, O, kH, kW = w.shape
    full = x.new_zeros(N, O, (H - 1) * s + kH + op, (W - 1) * s + kW + op)
    for h, ww in itertools.product(range(H), range(W)):
        full[:, :, h * s:h * s + kH, ww * s:ww * s + kW] += torch.einsum("nc,cokl->nokl", x[:, :, h, ww], w)
    out = full[:, :, p:full.shape[2] - p, p:full.shape[3] - p]
    return out if b is None else out + b[None, :, None, None]


def test_conv_transpose_matches_loop_reference():
    torch.manual_seed(2)
    x, w, b = torch.randn(2, 3, 4, 5), torch.randn(3, 2, 3, 3), torch.randn(2)
    for s, p, op in [(1, 0, 0), (2, 1, 1), (3, 2, 0)]:
        ours = conv_transpose2d(x, w, b, s, p, op)
        torch.testing.assert_close(ours, _loop_conv_transpose2d(x, w, b, s, p, op))


def test_conv_transpose_1d_seed_example(device):
    # Input (a, b), filter (x, y, z), stride 2: output (ax, ay, az + bx, by, bz).
    # Distinct primes make every product and sum identifiable.
    a, b, x, y, z = 2.0, 3.0, 5.0, 7.0, 11.0
    inp = torch.tensor([a, b], device=device).view(1, 1, 1, 2)  # a 1-row image
    ker = torch.tensor([x, y, z], device=device).view(1, 1, 1, 3)
    out = conv_transpose2d(inp, ker, stride=(1, 2)).flatten()
    print("1-D transposed conv of (2, 3) with (5, 7, 11), stride 2:", out.tolist())
    assert out.tolist() == [a * x, a * y, a * z + b * x, b * y, b * z] == [10, 14, 37, 21, 33]


# (N, C_in, C_out, H, W, kernel, stride, padding, output_padding, bias)
CT_CASES = [
    (2, 3, 4, 5, 6, 3, 1, 0, 0, True),
    (2, 3, 4, 5, 6, 3, 2, 1, 1, True),  # the lecture's 3x3 stride 2 pad 1
    (1, 2, 3, 4, 4, 4, 2, 1, 0, False),  # even kernel: FCN's 2x upsampler
    (2, 2, 2, 3, 5, 5, 3, 2, 2, True),  # stride 3, odd kernel 5, output_padding 2
    (1, 3, 2, 3, 3, 2, 3, 0, 2, True),  # output_padding > padding: extra rows hold only bias
    (2, 2, 3, 4, 3, (2, 5), (3, 1), (0, 2), (1, 0), True),  # non-square everything
    (1, 1, 1, 1, 1, 1, 1, 0, 0, True),
]


@pytest.mark.parametrize("case", CT_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose_matches_torch_values_and_grads(device, case, dtype):
    N, C_in, C_out, H, W, k, s, p, op, use_bias = case
    kH, kW = (k, k) if isinstance(k, int) else k
    torch.manual_seed(3)
    x = torch.randn(N, C_in, H, W, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(C_in, C_out, kH, kW, device=device, dtype=dtype, requires_grad=True)
    b = torch.randn(C_out, device=device, dtype=dtype, requires_grad=True) if use_bias else None
    ours = conv_transpose2d(x, w, b, s, p, op)
    with _exact_reference():
        ref = F.conv_transpose2d(x, w, b, s, p, op)
    assert ours.shape == ref.shape and ours.dtype == dtype and ours.device == x.device
    torch.testing.assert_close(ours, ref, **_tol(dtype))
    g = torch.randn_like(ref)
    params = [x, w] + ([b] if use_bias else [])
    g_ours = torch.autograd.grad(ours, params, g)
    with _exact_reference():
        g_ref = torch.autograd.grad(ref, params, g)
    for go, gr in zip(g_ours, g_ref):
        torch.testing.assert_close(go, gr, **_tol(dtype))


@pytest.mark.parametrize("s,p,op,k", [(1, 0, 0, 3), (2, 1, 1, 3), (3, 1, 2, (2, 4))])
def test_conv_transpose_gradcheck(s, p, op, k):
    torch.manual_seed(4)
    kH, kW = (k, k) if isinstance(k, int) else k
    x = torch.randn(2, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, kH, kW, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x, w, b: conv_transpose2d(x, w, b, s, p, op), (x, w, b))


def test_conv_transpose_empty_batch_and_unbatched(device):
    w = torch.randn(3, 4, 4, 4, device=device)
    out = conv_transpose2d(torch.zeros(0, 3, 5, 5, device=device), w, stride=2, padding=1)
    assert out.shape == (0, 4, 10, 10) and out.device == w.device
    x = torch.randn(3, 5, 5, device=device)
    with _exact_reference():
        torch.testing.assert_close(conv_transpose2d(x, w, stride=2), F.conv_transpose2d(x, w, stride=2))


def test_conv_transpose_bad_input():
    x, w = torch.randn(1, 3, 4, 4), torch.randn(3, 2, 3, 3)
    with pytest.raises(ValueError, match=r"\[N, C_in, H, W\]"):
        conv_transpose2d(x[0, 0], w)
    with pytest.raises(ValueError, match="C_in = 3"):
        conv_transpose2d(x, torch.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match="output_padding must be smaller than stride"):
        conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="output_padding must be smaller than stride"):
        conv_transpose2d(x, w, stride=1, output_padding=1)
    with pytest.raises(ValueError, match="bias"):
        conv_transpose2d(x, w, torch.randn(3))
    with pytest.raises(ValueError, match="padding"):
        conv_transpose2d(x, w, padding=4)


def test_conv_transpose_module_matches_torch(device):
    torch.manual_seed(5)
    ours = ConvTranspose2d(4, 3, (3, 4), stride=2, padding=1, output_padding=1, device=device)
    torch.manual_seed(5)
    ref = torch.nn.ConvTranspose2d(4, 3, (3, 4), stride=2, padding=1, output_padding=1, device=device)
    # Same shapes and, from the same seed, the same initial values as torch's layer.
    assert torch.equal(ours.weight, ref.weight) and torch.equal(ours.bias, ref.bias)
    x = torch.randn(2, 4, 5, 6, device=device)
    with _exact_reference():
        torch.testing.assert_close(ours(x), ref(x))
        torch.testing.assert_close(ours(x, output_size=[10, 13]), ref(x, output_size=[10, 13]))
    with pytest.raises(ValueError, match="not reachable"):
        ours(x, output_size=[11, 13])
    no_bias = ConvTranspose2d(4, 3, 2, stride=2, bias=False)
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ["weight"]
    ours(x).sum().backward()
    assert ours.weight.grad.shape == (4, 3, 3, 4) and ours.bias.grad.shape == (3,)


# ---------------------------------------------------------------- convolution as a matrix


def test_conv_matrix_seed_examples():
    a, b, c, d, x, y, z = 2.0, 3.0, 13.0, 17.0, 5.0, 7.0, 11.0
    ker = torch.tensor([x, y, z], dtype=torch.float64)
    # Stride 1: the lecture's 4 x 6 matrix acts on the zero-padded input (0, a, b, c, d, 0).
    X = conv_matrix(ker, 6)
    assert X.tolist() == [[x, y, z, 0, 0, 0], [0, x, y, z, 0, 0], [0, 0, x, y, z, 0], [0, 0, 0, x, y, z]]
    padded = torch.tensor([0, a, b, c, d, 0], dtype=torch.float64)
    assert (X @ padded).tolist() == [a*y + b*z, a*x + b*y + c*z, b*x + c*y + d*z, c*x + d*y]
    v = torch.tensor([a, b, c, d], dtype=torch.float64)
    assert (X.T @ v).tolist() == [a*x, a*y + b*x, a*z + b*y + c*x, b*z + c*y + d*x, c*z + d*y, d*z]
    # With padding=1 on the unpadded input, the padding columns are simply gone.
    assert torch.equal(conv_matrix(ker, 4, padding=1), X[:, 1:-1])
    # Stride 2: rows shift by two; the transpose gives (ax, ay, az + bx, by, bz, 0).
    X2 = conv_matrix(ker, 6, stride=2)
    assert X2.tolist() == [[x, y, z, 0, 0, 0], [0, 0, x, y, z, 0]]
    out = X2.T @ torch.tensor([a, b], dtype=torch.float64)
    print("X.T @ (a, b) for stride 2:", out.tolist())
    assert out.tolist() == [a*x, a*y, a*z + b*x, b*y, b*z, 0] == [10, 14, 37, 21, 33, 0]


@pytest.mark.parametrize("L,k,s,p", [(7, 3, 1, 0), (8, 3, 2, 1), (9, 4, 3, 2), (5, 5, 1, 0)])
def test_conv_matrix_1d_agrees_with_torch(L, k, s, p):
    torch.manual_seed(6)
    ker, a = torch.randn(k, dtype=torch.float64), torch.randn(L, dtype=torch.float64)
    X = conv_matrix(ker, L, stride=s, padding=p)
    conv = F.conv1d(a.view(1, 1, L), ker.view(1, 1, k), stride=s, padding=p).flatten()
    torch.testing.assert_close(X @ a, conv)
    y = torch.randn(X.shape[0], dtype=torch.float64)
    op = (L + 2 * p - k) % s
    tconv = F.conv_transpose1d(y.view(1, 1, -1), ker.view(1, 1, k), stride=s, padding=p, output_padding=op)
    torch.testing.assert_close(X.T @ y, tconv.flatten())


@pytest.mark.parametrize(
    "hw,k,s,p", [((5, 6), (3, 3), 1, 1), ((7, 6), (3, 2), (2, 3), (1, 0)), ((4, 4), (4, 4), 2, 1)]
)
def test_conv_matrix_2d_agrees_with_torch(device, hw, k, s, p):
    torch.manual_seed(7)
    ker = torch.randn(*k, device=device, dtype=torch.float64)
    a = torch.randn(1, 1, *hw, device=device, dtype=torch.float64)
    X = conv_matrix(ker, hw, stride=s, padding=p)
    conv = F.conv2d(a, ker[None, None], stride=s, padding=p)
    torch.testing.assert_close(X @ a.flatten(), conv.flatten())
    y = torch.randn_like(conv)
    sh, sw = (s, s) if isinstance(s, int) else s
    ph, pw = (p, p) if isinstance(p, int) else p
    op = ((hw[0] + 2 * ph - k[0]) % sh, (hw[1] + 2 * pw - k[1]) % sw)
    tconv = conv_transpose2d(y, ker[None, None], stride=s, padding=p, output_padding=op)
    torch.testing.assert_close(X.T @ y.flatten(), tconv.flatten())
    torch.testing.assert_close(tconv, F.conv_transpose2d(y, ker[None, None], None, s, p, op))


def test_conv_matrix_gradient_and_errors():
    ker = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda k: conv_matrix(k, (3, 4), stride=(1, 2), padding=1), (ker,))
    with pytest.raises(ValueError, match="kernel"):
        conv_matrix(torch.randn(1, 1, 3), 5)
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv_matrix(torch.randn(5), 3)


# ---------------------------------------------------------------- bilinear initialization


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bilinear_kernel_upsamples_a_ramp(factor):
    k, p = 2 * factor - factor % 2, factor // 2  # FCN's kernel and padding for this factor
    H, W = 5, 6
    hh, ww = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    ramp = (2.0 * hh - 3.0 * ww + 1.0)[None, None]  # a linear function of the pixel position
    out = conv_transpose2d(ramp, bilinear_kernel(1, 1, k, dtype=torch.float64), stride=factor, padding=p)
    assert out.shape == (1, 1, H * factor, W * factor)
    # Output pixel i sits at input coordinate (i + 0.5) / factor - 0.5 (align_corners=False);
    # interpolating a linear function reproduces it exactly wherever both neighbours exist.
    ci = (torch.arange(H * factor, dtype=torch.float64) + 0.5) / factor - 0.5
    cj = (torch.arange(W * factor, dtype=torch.float64) + 0.5) / factor - 0.5
    expected = 2.0 * ci[:, None] - 3.0 * cj[None, :] + 1.0
    inside = ((ci >= 0) & (ci <= H - 1))[:, None] & ((cj >= 0) & (cj <= W - 1))[None, :]
    assert inside.sum() > 0.5 * inside.numel()
    torch.testing.assert_close(out[0, 0][inside], expected[inside])
    # On random input the interior equals torch's bilinear upsampling.
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    up = conv_transpose2d(x, bilinear_kernel(3, 3, k, dtype=torch.float64), stride=factor, padding=p)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up[..., p:-p, p:-p], ref[..., p:-p, p:-p])


def test_bilinear_kernel_seed_example_and_shape(device):
    w = bilinear_kernel(1, 1, 4, device=device)
    assert w.shape == (1, 1, 4, 4) and w.dtype == torch.get_default_dtype() and w.device.type == device.type
    out = conv_transpose2d(_seed_2x2(device), w, stride=2, padding=1)[0, 0]
    # The lecture's 2x2 -> 4x4 bilinear table has 1.75 2.25 / 2.75 3.25 in the middle;
    # the border differs because the transposed conv sees zeros outside the image.
    torch.testing.assert_close(out[1:3, 1:3], torch.tensor([[1.75, 2.25], [2.75, 3.25]], device=device))
    w3 = bilinear_kernel(3, 3, 5)
    assert torch.equal(w3[0, 1], torch.zeros(5, 5)) and torch.equal(w3[2, 2], w3[0, 0])
    torch.testing.assert_close(w3[0, 0, 2], torch.tensor([1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3]))
    with pytest.raises(ValueError, match="in_channels must equal"):
        bilinear_kernel(2, 3, 4)
