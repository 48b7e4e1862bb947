"""UPerNet keeps mmseg's parameter names and computes what HF transformers' UperNetHead computes."""

import pytest
import torch

from vitdense.models.heads import FCNHead, UPerHead

transformers = pytest.importorskip("transformers")


def _hf_state_dict(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in ours.items():
        key = key.replace(".bn.", ".batch_norm.").replace("conv_seg.", "classifier.")
        renamed[key] = value
    return renamed


def _randomise_bn(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def test_upernet_matches_hf_uperhead() -> None:
    from transformers import UperNetConfig
    from transformers.models.upernet.modeling_upernet import UperNetHead

    in_channels = [16, 24, 32, 48]
    ours = UPerHead(in_channels, num_classes=7, channels=32, pool_scales=(1, 2, 3, 6)).eval()
    _randomise_bn(ours)
    config = UperNetConfig(
        hidden_size=32,
        pool_scales=[1, 2, 3, 6],
        num_labels=7,
        backbone_config={"model_type": "resnet", "out_features": ["stage1"]},
    )
    hf = UperNetHead(config, in_channels=in_channels).eval()
    hf.load_state_dict(_hf_state_dict(ours.state_dict()), strict=True)
    features = [torch.randn(2, c, 64 // 2**i, 80 // 2**i) for i, c in enumerate(in_channels)]
    with torch.no_grad():
        torch.testing.assert_close(ours(features), hf(features), atol=1e-5, rtol=1e-5)


def test_mmseg_parameter_names() -> None:
    head = UPerHead([8, 8, 8, 8], num_classes=3, channels=8)
    keys = set(head.state_dict())
    for key in (
        "psp_modules.0.1.conv.weight",
        "psp_modules.3.1.bn.running_var",
        "bottleneck.conv.weight",
        "lateral_convs.2.bn.weight",
        "fpn_convs.0.conv.weight",
        "fpn_bottleneck.bn.bias",
        "conv_seg.weight",
    ):
        assert key in keys
    aux = FCNHead(8, num_classes=3, channels=4)
    assert {"convs.0.conv.weight", "conv_seg.weight"} <= set(aux.state_dict())
