"""The tiny Faster R-CNN settings shared by the detection tests: small enough that a
forward and backward pass take milliseconds on one CPU thread."""

from cv_course.models.detection import FasterRCNNConfig

TINY = FasterRCNNConfig(pretrained=False, fpn_channels=16, representation_size=32,
                        rpn_batch_size_per_image=64, box_batch_size_per_image=32,
                        rpn_pre_nms_top_n=(100, 50), rpn_post_nms_top_n=(50, 20))
