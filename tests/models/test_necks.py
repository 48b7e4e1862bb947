"""Necks: the multi-level pyramid of a plain ViT."""

import torch
from torch import nn

from vitdense.models.necks import MultiLevelNeck


def test_multilevel_neck_rescales_each_level_to_its_stride() -> None:
    neck = MultiLevelNeck([8] * 4, [16] * 4)
    features = [torch.randn(2, 8, 13, 15) for _ in range(4)]  # odd sizes: pooling floors as chained pools do
    out = neck(features)
    assert neck.strides == [4, 8, 16, 32]
    assert [tuple(o.shape[-2:]) for o in out] == [(52, 60), (26, 30), (13, 15), (6, 7)]
    # Down-sampling is one 2^k max-pool, equal to k chained stride-2 pools.
    chained = nn.Sequential(nn.MaxPool2d(2, 2))
    torch.testing.assert_close(out[3], chained(features[3]))
    eight = MultiLevelNeck([8], [4], out_strides=(32,))
    pooled = nn.Sequential(*[nn.MaxPool2d(2, 2)] * 3)(features[0])
    torch.testing.assert_close(eight([features[0]])[0], pooled)
    assert eight.state_dict() == {}  # pooling has no parameters: checkpoints are unchanged
