"""OHEM cross-entropy: the mean over hard pixels, at least min_kept of them, void never counted.

How SegmentationTask combines its loss terms is tested in tests/tasks/test_segmentation.py.
"""

import torch
import torch.nn.functional as F

from vitdense.losses import ohem_cross_entropy


def test_ohem_keeps_hard_pixels_and_at_least_min_kept() -> None:
    target = torch.tensor([[[0, 1, 1, 255]]])  # (1, 1, 4); last pixel void
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0, 0, 0] = 5.0  # pixel 0: confident and right (easy)
    logits[0, 0, 0, 1] = 5.0  # pixel 1: confident and wrong (hard)
    logits[0, 1, 0, 2] = 1.0  # pixel 2: right, p = 0.73 (easy at 0.7)
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")[0, 0]
    loss = ohem_cross_entropy(logits, target, ignore_index=255, thresh=0.7, min_kept=1)
    torch.testing.assert_close(loss, per_pixel[1])
    two = ohem_cross_entropy(logits, target, ignore_index=255, thresh=0.7, min_kept=2)  # the two hardest
    torch.testing.assert_close(two, (per_pixel[1] + per_pixel[2]) / 2)
    everything = ohem_cross_entropy(logits, target, ignore_index=255, thresh=1.0, min_kept=1)
    torch.testing.assert_close(everything, F.cross_entropy(logits, target, ignore_index=255))
