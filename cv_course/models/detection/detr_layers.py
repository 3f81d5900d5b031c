"""DETR's building blocks: sine position codes, reference points, transformer layers.

Carion et al., "End-to-End Object Detection with Transformers" (DETR), ECCV 2020, the
transformer of section 3.2 and appendix A.3: the position encoding is added to the
queries and keys of *every* attention layer (not only to the input), which is what lets
cross-attention find where an object is. :class:`cv_course.models.detection.detr.DETR`
assembles them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sine_point_encoding(points: Tensor, d_model: int, temperature: float = 10000.0) -> Tensor:
    """DETR's sine encoding of normalized (x, y) points: half the channels encode y, half x.

    With (x, y) scaled to (0, 2 pi], frequency i < d/4 gives ``sin(y / T**(4i/d)),
    cos(y / T**(4i/d))`` and the same for x (T = ``temperature``), the encoding of
    "Attention Is All You Need" once per axis. Nearby points get similar codes.

    Args:
        points (Tensor[..., 2]): (x, y) in [0, 1].
    Returns:
        Tensor[..., d_model]: [y sines, y cosines, x sines, x cosines].
    """
    n = d_model // 4  # frequencies per axis
    freq = temperature ** (torch.arange(n, device=points.device, dtype=points.dtype) / n)  # [n]
    angles = points[..., None] * (2 * math.pi) / freq  # [..., 2, n]
    x, y = angles[..., 0, :], angles[..., 1, :]
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], -1)  # [..., 4n]


def sine_position_encoding(H: int, W: int, d_model: int, device=None,
                           dtype=torch.float32) -> Tensor:
    """:func:`sine_point_encoding` of the centres of an H x W grid of cells.

    Returns:
        Tensor[H * W, d_model], row-major over the cells (the order of ``flatten(2)``).
    """
    return sine_point_encoding(cell_centres(H, W, device, dtype), d_model)  # [H*W, d]


def cell_centres(H: int, W: int, device=None, dtype=torch.float32) -> Tensor:
    """Normalized (x, y) centres of an H x W grid of cells, Tensor[H * W, 2], row-major."""
    y = (torch.arange(H, device=device, dtype=dtype) + 0.5) / H  # [H]
    x = (torch.arange(W, device=device, dtype=dtype) + 0.5) / W  # [W]
    return torch.stack(torch.meshgrid(x, y, indexing="xy"), -1).flatten(0, 1)  # [H*W, 2]


def reference_grid(n: int) -> Tensor:
    """``n`` points (x, y) spread over the unit square: the centres of a ceil(sqrt(n))-wide grid,
    row by row, the last row partly filled. Returns Tensor[n, 2] in (0, 1)."""
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    k = torch.arange(n)
    return torch.stack([(k % cols + 0.5) / cols, (k // cols + 0.5) / rows], 1)  # [n, 2]


class EncoderLayer(nn.Module):
    """Self-attention over the feature cells (position added to queries and keys), then an MLP."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:  # x [B, N, d], pos [N, d]
        qk = x + pos
        x = self.norm1(x + self.drop(self.attn(qk, qk, x, need_weights=False)[0]))
        return self.norm2(x + self.drop(self.mlp(x)))  # [B, N, d]


class DecoderLayer(nn.Module):
    """Queries attend to each other (no duplicates), then to the encoded map, then an MLP."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def forward(self, t: Tensor, query_pos: Tensor, memory: Tensor, pos: Tensor,
                prior: Tensor | None = None, self_mask: Tensor | None = None) -> Tensor:
        # t [B, Q, d] the queries' state, query_pos [Q, d], memory [B, N, d], pos [N, d],
        # prior [Q, N] or None: added to the cross-attention logits,
        # self_mask [Q, Q] bool or None: True where a query may not see another (query groups)
        qk = t + query_pos
        t = self.norms[0](t + self.drop(self.self_attn(qk, qk, t, attn_mask=self_mask,
                                                       need_weights=False)[0]))
        t = self.norms[1](t + self.drop(self.cross_attn(
            t + query_pos, memory + pos, memory, attn_mask=prior, need_weights=False)[0]))
        return self.norms[2](t + self.drop(self.mlp(t)))  # [B, Q, d]


class MLP(nn.Sequential):
    """``layers`` linear layers with ReLU between them (DETR's box head has 3)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, layers: int):
        dims = [d_in] + [d_hidden] * (layers - 1) + [d_out]
        mods = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            mods += [nn.Linear(a, b)] + ([nn.ReLU()] if i < layers - 1 else [])
        super().__init__(*mods)


__all__ = ["sine_point_encoding", "sine_position_encoding", "cell_centres", "reference_grid",
           "EncoderLayer", "DecoderLayer", "MLP"]
