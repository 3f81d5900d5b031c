"""Anchors against torchvision's AnchorGenerator (centre offset and rounding
accounted for) and a loop reference."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from cv_course.ops import AnchorGenerator, box_area, grid_anchors


def loop_anchors(feature_size, stride, sizes, ratios):
    (H, W), (sy, sx) = feature_size, stride
    rows = []
    for i in range(H):
        for j in range(W):
            for r in ratios:
                for s in sizes:
                    w, h = s / math.sqrt(r), s * math.sqrt(r)
                    cx, cy = (j + 0.5) * sx, (i + 0.5) * sy
                    rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


CASES = [((4, 4), 32, (32, 64), (0.5, 1.0, 2.0)), ((8, 6), (16, 20), (24.0,), (1.0,)),
         ((3, 5), 8, (10, 20, 40), (0.25, 1.0, 3.0))]


@pytest.mark.parametrize("feature_size,stride,sizes,ratios", CASES)
def test_grid_anchors_match_loop_and_properties(feature_size, stride, sizes, ratios, device):
    for dtype in (torch.float32, torch.float64):
        ours = grid_anchors(feature_size, stride, sizes, ratios, device=device, dtype=dtype)
        A = len(sizes) * len(ratios)
        assert ours.shape == (feature_size[0] * feature_size[1] * A, 4)
        assert ours.dtype == dtype and ours.device.type == device.type
        pair = (stride, stride) if isinstance(stride, int) else stride
        torch.testing.assert_close(ours.cpu(), loop_anchors(feature_size, pair, sizes, ratios).to(dtype))
        w, h = ours[:, 2] - ours[:, 0], ours[:, 3] - ours[:, 1]
        expected_area = torch.tensor(sizes, dtype=dtype, device=device).repeat(len(ratios)).repeat(len(ours) // A)
        torch.testing.assert_close(box_area(ours), expected_area ** 2)
        torch.testing.assert_close(h / w, torch.tensor(ratios, dtype=dtype, device=device)
                                   .repeat_interleave(len(sizes)).repeat(len(ours) // A))


@pytest.mark.parametrize("feature_size,stride,sizes,ratios", CASES)
def test_grid_anchors_equal_torchvisions_after_offset_and_rounding(feature_size, stride, sizes, ratios):
    pair = (stride, stride) if isinstance(stride, int) else stride
    image = torch.zeros(1, 3, feature_size[0] * pair[0], feature_size[1] * pair[1])
    features = [torch.zeros(1, 1, *feature_size)]
    theirs = TVAnchorGenerator((sizes,), (ratios,))(ImageList(image, [image.shape[-2:]]), features)[0]
    ours = grid_anchors(feature_size, stride, sizes, ratios)
    shifted = ours - torch.tensor([pair[1], pair[0], pair[1], pair[0]]) / 2  # centres at k * stride
    # torchvision rounds each half-size to a whole pixel: at most half a pixel apart
    assert (shifted - theirs).abs().max() <= 0.5
    # where the half-sizes are whole numbers, nothing is rounded: exactly equal
    whole = ((ours[:, 2:] - ours[:, :2]) / 2 == ((ours[:, 2:] - ours[:, :2]) / 2).round()).all(1)
    assert whole.any()
    assert torch.equal(shifted[whole], theirs[whole])


def test_anchors_are_symmetric_on_the_image():
    # the point of the (k + 0.5) * stride convention: centres are mirrored about the image centre
    anchors = grid_anchors((4, 4), 32, (48,), (0.5, 2.0))
    mirrored = 128 - anchors[:, [2, 3, 0, 1]]
    torch.testing.assert_close(torch.sort(anchors, dim=0).values, torch.sort(mirrored, dim=0).values)
    torchvisions = anchors - 16  # centres at 0, 32, 64, 96: not symmetric
    assert not torch.allclose(torch.sort(torchvisions, dim=0).values,
                              torch.sort(128 - torchvisions[:, [2, 3, 0, 1]], dim=0).values)


def test_anchor_generator_matches_torchvision_levels():
    sizes, ratios = ((16,), (32,), (64, 90)), ((0.5, 1.0, 2.0),) * 3
    image = torch.zeros(2, 3, 128, 128)
    features = [torch.zeros(2, 8, 128 // s, 128 // s) for s in (4, 8, 16)]
    theirs = TVAnchorGenerator(sizes, ratios)(ImageList(image, [(128, 128)] * 2), features)[0]
    ours = AnchorGenerator(sizes, (0.5, 1.0, 2.0))
    levels = ours((128, 128), [f.shape for f in features])
    assert ours.num_anchors_per_location() == [3, 3, 6] == TVAnchorGenerator(sizes, ratios).num_anchors_per_location()
    assert [len(a) for a in levels] == [32 * 32 * 3, 16 * 16 * 3, 8 * 8 * 6]
    offset = torch.cat([torch.full((len(a), 4), s / 2) for a, s in zip(levels, (4, 8, 16))])
    assert (torch.cat(levels) - offset - theirs).abs().max() <= 0.5


def test_empty_and_errors(device):
    empty = grid_anchors((0, 5), 16, (32,), (1.0,), device=device, dtype=torch.float64)
    assert empty.shape == (0, 4) and empty.dtype == torch.float64 and empty.device.type == device.type
    with pytest.raises(ValueError, match="stride"):
        grid_anchors((4, 4), 0, (32,), (1.0,))
    with pytest.raises(ValueError, match="positive"):
        grid_anchors((4, 4), 16, (32,), (-1.0,))
    with pytest.raises(ValueError, match="levels"):
        AnchorGenerator(((16,), (32,)), ((1.0,),) * 3)
    with pytest.raises(ValueError, match="feature maps"):
        AnchorGenerator(((16,), (32,)))((128, 128), [(32, 32)])
