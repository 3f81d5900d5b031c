"""Bipartite matching of predictions to ground truth, as in DETR.

Carion et al., "End-to-End Object Detection with Transformers" (DETR), ECCV 2020,
section 3.1: a detector that outputs a *set* of Q predictions is trained by first
pairing each ground-truth object with exactly one prediction, the pairing of
least total cost (the Hungarian algorithm, Kuhn 1955), and then applying the
class and box losses to the pairs; the predictions left over learn "no object".
Because each object gets one prediction, duplicates are penalised and no NMS
is needed at test time.

The cost of pairing prediction q with object t (DETR's weights 1, 5, 2):

    C[q, t] = -cost_class * p_q(class_t)            # softmax probability
              + cost_bbox * || b_q - b_t ||_1        # normalized (cx, cy, w, h)
              - cost_giou * GIoU(b_q, b_t)

The assignment solver is scipy's ``linear_sum_assignment`` (as in DETR); the
cost matrix and the batching around it are written out here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_tensor
from .boxes import box_convert, generalized_box_iou


def hungarian_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost one-to-one assignment of rows (predictions) to columns (targets).

    Args:
        cost (Tensor[N, G]): cost of pairing row i with column j; any real dtype.
            ``+inf`` forbids a pair. N >= G and N < G both work.
    Returns:
        (Tensor[K], Tensor[K]), int64, on ``cost.device``, K = min(N, G): row and
        column indices, rows ascending, each row and each column used at most once,
        and ``cost[rows, cols].sum()`` is the least over all such assignments.
        Empty when N or G is 0.
    """
    check_tensor(cost, "cost")
    if cost.dim() != 2:
        raise ValueError(f"cost must be a matrix [N, G], got shape {list(cost.shape)}")
    if cost.dtype == torch.bool or cost.is_complex():
        raise ValueError(f"cost must hold real numbers, got {cost.dtype}")
    if cost.is_floating_point() and bool((cost.isnan() | (cost == -torch.inf)).any()):
        raise ValueError("cost contains NaN or -inf; a NaN usually comes from NaN predicted "
                         "boxes or logits (a diverged model), check the predictions")
    # Imported here, not at the top: scipy.optimize takes ~1 s to import and
    # only matching needs it, not every `import cv_course.ops`.
    from scipy.optimize import linear_sum_assignment

    if cost.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=cost.device)
        return empty, empty.clone()
    # The Hungarian algorithm is sequential (augmenting paths): it runs on the
    # CPU, once per image; the cost matrix itself is built vectorized on any device.
    try:
        # float64: numpy has no bfloat16, and it is exact for float16/32 and int costs.
        rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    except ValueError as err:  # every complete assignment crosses a +inf
        raise ValueError(f"no assignment avoids the +inf (forbidden) pairs: {err}") from None
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.int64).to(cost.device)  # noqa: E731
    return as_tensor(rows), as_tensor(cols)


class HungarianMatcher:
    """DETR's matcher: pair each ground-truth object of each image with one query.

    Args:
        cost_class (float): weight of ``-p(target class)``.
        cost_bbox (float): weight of the L1 distance of normalized (cx, cy, w, h) boxes.
        cost_giou (float): weight of ``-GIoU``.

    ``matcher(outputs, targets)`` returns, for each image, ``(pred_idx, tgt_idx)``:
    int64 Tensor[K] each, K = min(Q, number of objects), such that query
    ``pred_idx[k]`` is trained towards object ``tgt_idx[k]``.
    """

    def __init__(self, cost_class: float = 1, cost_bbox: float = 5, cost_giou: float = 2):
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("at least one of cost_class, cost_bbox, cost_giou must be non-zero")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    @torch.no_grad()
    def cost_matrix(self, outputs: dict, targets: list[dict]) -> Tensor:
        """The matching cost of every query of the batch against every object of the batch.

        Args:
            outputs (dict): ``pred_logits`` (Tensor[B, Q, C + 1], the last class is
                "no object") and ``pred_boxes`` (Tensor[B, Q, 4], normalized
                (cx, cy, w, h) in [0, 1]).
            targets (list[dict]): B dicts with ``labels`` (int64 Tensor[T_b] in
                [0, C)) and ``boxes`` (Tensor[T_b, 4], normalized (cx, cy, w, h)).
        Returns:
            Tensor[B, Q, T], T = T_0 + ... + T_{B-1}: ``cost[b, :, s_b : s_b + T_b]``,
            s_b = T_0 + ... + T_{b-1}, is image b's own cost matrix (the diagonal
            blocks); the rest pairs queries with other images' objects, never used.
        """
        logits, boxes = self._check(outputs, targets)
        B, Q, C1 = logits.shape
        if B == 0:
            return logits.new_zeros(0, Q, 0)
        # One matrix for the whole batch: a few large ops instead of B small ones.
        prob = logits.flatten(0, 1).softmax(-1)  # [B*Q, C+1]
        out_boxes = boxes.flatten(0, 1)  # [B*Q, 4]
        tgt_labels = torch.cat([t["labels"] for t in targets]).to(logits.device)  # [T]
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(boxes)  # [T, 4]

        # -p(class) and not -log p(class): the same scale as the box costs (DETR, 3.1).
        cost_class = -prob[:, tgt_labels]  # [B*Q, T]
        cost_bbox = (out_boxes[:, None, :] - tgt_boxes[None, :, :]).abs().sum(-1)  # [B*Q, T]
        cost_giou = -generalized_box_iou(box_convert(out_boxes, "cxcywh", "xyxy"),
                                         box_convert(tgt_boxes, "cxcywh", "xyxy"))  # [B*Q, T]
        cost = (self.cost_class * cost_class + self.cost_bbox * cost_bbox
                + self.cost_giou * cost_giou)
        return cost.view(B, Q, len(tgt_labels))  # [B, Q, T]

    @torch.no_grad()
    def __call__(self, outputs: dict, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        """B pairs ``(pred_idx, tgt_idx)``, int64 Tensor[K_b] on the predictions' device;
        arguments as in ``cost_matrix``."""
        cost = self.cost_matrix(outputs, targets).cpu()  # [B, Q, T], one transfer
        if not targets:
            return []
        sizes = [len(t["boxes"]) for t in targets]
        # Image b's queries may only take image b's objects: keep the diagonal block.
        blocks = [c[b] for b, c in enumerate(cost.split(sizes, dim=-1))]  # B x [Q, T_b]
        device = outputs["pred_logits"].device
        return [tuple(i.to(device) for i in hungarian_match(c)) for c in blocks]

    def _check(self, outputs: dict, targets: list[dict]) -> tuple[Tensor, Tensor]:
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        check_tensor(logits, "outputs['pred_logits']")
        check_tensor(boxes, "outputs['pred_boxes']")
        if logits.dim() != 3 or boxes.dim() != 3 or boxes.shape != (*logits.shape[:2], 4):
            raise ValueError("pred_logits must be [B, Q, C + 1] and pred_boxes [B, Q, 4], got "
                             f"{list(logits.shape)} and {list(boxes.shape)}")
        B, Q, C1 = logits.shape
        if len(targets) != B:
            raise ValueError(f"targets must be a list of B = {B} dicts (one per image), "
                             f"got {len(targets)}")
        for b, t in enumerate(targets):
            labels, tboxes = t["labels"], t["boxes"]
            if labels.dim() != 1 or tboxes.shape != (len(labels), 4):
                raise ValueError(f"targets[{b}]: labels must be [T] and boxes [T, 4], got "
                                 f"{list(labels.shape)} and {list(tboxes.shape)}")
            if labels.is_floating_point() or bool(((labels < 0) | (labels >= C1 - 1)).any()):
                raise ValueError(f"targets[{b}]['labels'] must be integers in [0, {C1 - 1}); "
                                 f"{C1 - 1} is the no-object class and is never a target")
        return logits, boxes


def set_matching_example(verbose: bool = True) -> dict:
    """The lecture's set loss in two steps, on three queries and two objects.

    Step 1, Hungarian matching: each object takes the query of least cost. Queries 0
    and 1 both sit on the cat (a duplicate); the cat takes query 0, the dog query 2.
    Step 2, the losses given the matching: matched queries learn their object's class
    and box (-log p(class), L1, 1 - GIoU); query 1 learns "no object", which is how a
    set loss removes duplicates without NMS. Prints (and returns, as floats)::

        cost         cat      dog
        query 0    -2.45*    5.39
        query 1    -1.91     5.61
        query 2     5.55    -2.04*
        query 0 -> cat: -log p(cat) = 0.09, L1 = 0.02, 1 - GIoU = 0.18
        query 2 -> dog: -log p(dog) = 0.24, L1 = 0.07, 1 - GIoU = 0.20
        query 1 -> no object: -log p(no object) = 1.41

    (``*``: the matched pairs.) How the terms are weighted and averaged is the set
    criterion's business (DETR: 1, 5, 2, and 0.1 on "no object").

    Returns:
        dict: ``cost`` (Tensor[3, 2]), ``pred_idx`` and ``tgt_idx`` (int64 Tensor[2]),
        ``terms`` ({query: the floats printed on its line}) and ``text`` (the print).
    """
    names = ["cat", "dog"]  # class 2 is "no object"
    logits = torch.tensor([[[3.0, 0.0, 0.0], [2.0, 0.0, 1.0], [0.0, 2.0, 0.0]]])  # [1, 3, 3]
    boxes = torch.tensor([[[0.32, 0.30, 0.20, 0.20],  # normalized (cx, cy, w, h)
                           [0.28, 0.31, 0.22, 0.20],
                           [0.70, 0.68, 0.20, 0.25]]])  # [1, 3, 4]
    targets = [{"labels": torch.tensor([0, 1]),
                "boxes": torch.tensor([[0.30, 0.30, 0.20, 0.20], [0.70, 0.70, 0.20, 0.20]])}]
    outputs = {"pred_logits": logits, "pred_boxes": boxes}
    matcher = HungarianMatcher()
    cost = matcher.cost_matrix(outputs, targets)[0]  # [3, 2]
    (pred_idx, tgt_idx), = matcher(outputs, targets)
    pairs = dict(zip(pred_idx.tolist(), tgt_idx.tolist()))  # query -> object

    log_p = logits[0].log_softmax(-1)  # [3, 3]
    xyxy = lambda b: box_convert(b, "cxcywh", "xyxy")  # noqa: E731
    lines = ["cost    " + "".join(f"{n:>8} " for n in names).rstrip()]
    for q in range(len(cost)):
        cells = [f"{float(c):8.2f}" + ("*" if pairs.get(q) == j else " ")
                 for j, c in enumerate(cost[q])]
        lines.append(f"query {q} " + "".join(cells).rstrip())
    terms = {}
    for q, j in pairs.items():
        b, t = boxes[0, q], targets[0]["boxes"][j]
        terms[q] = (float(-log_p[q, j]), float((b - t).abs().sum()),
                    float(1 - generalized_box_iou(xyxy(b[None]), xyxy(t[None]))[0, 0]))
        lines.append(f"query {q} -> {names[j]}: -log p({names[j]}) = {terms[q][0]:.2f}, "
                     f"L1 = {terms[q][1]:.2f}, 1 - GIoU = {terms[q][2]:.2f}")
    for q in sorted(set(range(len(cost))) - set(pairs)):
        terms[q] = (float(-log_p[q, -1]),)
        lines.append(f"query {q} -> no object: -log p(no object) = {terms[q][0]:.2f}")
    text = "\n".join(lines)
    if verbose:
        print(text)
    return {"cost": cost, "pred_idx": pred_idx, "tgt_idx": tgt_idx, "terms": terms, "text": text}
