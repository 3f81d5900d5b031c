"""t-SNE embeddings of deep features, and a number that says how well they cluster.

van der Maaten and Hinton, "Visualizing Data using t-SNE", JMLR 2008. t-SNE
keeps near neighbours near; distances between clusters and cluster sizes in the
picture carry little meaning, so read it for "which points are together".
"""

from __future__ import annotations

import torch
from torch import Tensor


def embed_tsne(
    features: Tensor, labels: Tensor | None = None, seed: int = 0, perplexity: float = 30.0
) -> Tensor:
    """2-D t-SNE embedding of feature vectors (scikit-learn's ``TSNE``).

    Args:
        features (Tensor[N, D]): one feature vector per image, e.g. the globally
            pooled last conv features.
        labels (Tensor[N], optional): not used by t-SNE (it is unsupervised);
            only checked to have one entry per feature vector, so that a
            mismatched pair fails here and not in the plot that colours by it.
        seed (int): t-SNE's random state; same seed, same picture.
        perplexity (float): roughly the number of neighbours each point keeps;
            lowered to (N - 1) / 3 for small N, as scikit-learn needs < N.
    Returns:
        Tensor[N, 2] (float32): the embedding, on the features' device.
    """
    # Imported here: scikit-learn is optional (threadpoolctl comes with it).
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    if not isinstance(features, Tensor) or features.dim() != 2:
        shape = list(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must have shape [N, D], got {shape}")
    N = features.shape[0]
    if labels is not None and (labels.dim() != 1 or labels.shape[0] != N):
        raise ValueError(f"labels must have shape [{N}], got {list(labels.shape)}")
    if N < 2:
        raise ValueError(f"t-SNE needs at least 2 points, got {N}")
    tsne = TSNE(
        n_components=2,
        perplexity=min(perplexity, (N - 1) / 3),
        init="pca",
        random_state=seed,
    )
    data = features.detach().double().cpu().numpy()
    # With torch loaded, two OpenMP runtimes compete for the cores and t-SNE can
    # run 10-100x slower; one thread is fast enough for course-sized N.
    with threadpool_limits(limits=1):
        xy = tsne.fit_transform(data)  # [N, 2]
    return torch.as_tensor(xy, dtype=torch.float32).to(features.device)


def knn_label_agreement(points: Tensor, labels: Tensor, k: int = 5) -> Tensor:
    """Fraction of each point's k nearest neighbours that share its label.

    Args:
        points (Tensor[N, D]): e.g. a t-SNE embedding ([N, 2]) or the features.
        labels (Tensor[N]): class per point.
        k (int): neighbours per point (the point itself excluded), < N.
    Returns:
        Tensor[] (scalar): mean agreement in [0, 1]; about the largest class's
        share for random points, 1 when every class forms its own tight cluster.
    """
    N = points.shape[0]
    if labels.shape != (N,) or not 0 < k < N:
        raise ValueError(f"need labels of shape [{N}] and 0 < k < {N}, got {list(labels.shape)}, k={k}")
    d = torch.cdist(points.double(), points.double())  # [N, N]
    d.fill_diagonal_(float("inf"))
    nn_idx = d.topk(k, dim=1, largest=False).indices  # [N, k]
    same = labels[nn_idx] == labels[:, None]  # [N, k]
    return same.double().mean()
