"""Understanding CNNs: what a classifier looks at, and how to fool it.

One concept per file, each implemented from its paper (not delegated to Captum
or pytorch-grad-cam, which the tests use as references):

- ``filters``: the first layer's kernels as images
- ``saliency``: vanilla gradient saliency (Simonyan et al. 2014)
- ``cam`` / ``grad_cam``: class activation maps (Zhou et al. 2016; Selvaraju et al. 2017)
- ``occlusion``: occlusion sensitivity (Zeiler and Fergus 2014)
- ``adversarial``: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018)
- ``feature_vis``: activation maximization and DeepDream
- ``embedding``: t-SNE of deep features
- ``pointing_game``: does the heatmap's peak land on the object? (Zhang et al. 2016)

Every function runs the model in eval mode on the model's device and leaves its
train/eval mode, parameters, ``.grad`` and ``requires_grad`` flags, and the
caller's tensors as they were; no hook outlives a call.
"""

from .adversarial import fgsm, pgd
from .cam import cam
from .embedding import embed_tsne, knn_label_agreement
from .feature_vis import Regularizer, activation_maximization, deepdream, total_variation
from .filters import first_conv, first_layer_filters
from .grad_cam import grad_cam
from .heatmap import upsample_heatmap
from .occlusion import occlusion, occlusion_masks, occlusion_to_image
from .pointing_game import pointing_game, pointing_hits
from .saliency import saliency

__all__ = [
    "first_conv",
    "first_layer_filters",
    "saliency",
    "cam",
    "grad_cam",
    "upsample_heatmap",
    "occlusion",
    "occlusion_masks",
    "occlusion_to_image",
    "fgsm",
    "pgd",
    "Regularizer",
    "activation_maximization",
    "deepdream",
    "total_variation",
    "embed_tsne",
    "knn_label_agreement",
    "pointing_game",
    "pointing_hits",
]
