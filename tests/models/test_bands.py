"""Multi-band input (backbone.in_chans): an N-band model starts as the RGB model it was made from, for every backbone
family; a grey band sees what the RGB model sees of a grey image; band settings are checked."""

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from tests.tiny import FOUNDATION_NAMES, HYBRID, SWIN, TINY, TINY_SWIN, VIT
from vitdense import SegmentationTask
from vitdense.models.backbone import Backbone, resolve_backbone_config

KWARGS = {VIT: TINY, SWIN: TINY_SWIN, HYBRID: {"depth": 2}} | {
    name: {"depth": 2, "embed_dim": 48, "num_heads": 2} for name in FOUNDATION_NAMES[:3]
}


def rgb_weights(name: str, tmp_path: Path) -> Path:
    """A random 3-band timm model of ``name`` saved as a local weights file (the stand-in for pretrained weights)."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=0, **KWARGS[name])
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def backbone(name: str, weights: Path, **bands) -> Backbone:
    cfg = resolve_backbone_config({"name": name, "pretrained": str(weights), "model_kwargs": KWARGS[name], **bands})
    return Backbone(cfg).eval()


@pytest.mark.parametrize("name", [n for n in KWARGS if n != HYBRID])
def test_an_n_band_model_starts_as_the_rgb_model(name: str, tmp_path: Path) -> None:
    """Bands (blue, green, red, near-infrared, red-edge): the RGB bands keep their pretrained filters and
    normalisation, the others start at zero, so the 5-band model gives the RGB model's features whatever the extra
    bands hold; they still get gradients and learn."""
    weights = rgb_weights(name, tmp_path)
    rgb, five = backbone(name, weights), backbone(name, weights, in_chans=5, rgb_bands=[2, 1, 0])
    image = torch.rand(2, 3, 64, 64)
    bands = torch.cat([image.flip(1), torch.rand(2, 2, 64, 64)], 1)
    with torch.no_grad():
        for ours, theirs in zip(five(bands), rgb(image), strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert torch.equal(five.mean.flatten()[[2, 1, 0]], rgb.mean.flatten())
    first = dict(five.model.named_parameters())[f"{five.model.pretrained_cfg['first_conv']}.weight"]
    sum(f.sum() for f in five(bands)).backward()
    assert first.grad[:, 3:].abs().sum() > 0  # the new bands learn


def test_a_hybrid_keeps_its_rgb_stem_filters(tmp_path: Path) -> None:
    """The BiT stem standardises its weights over all input bands, so zero bands shift that standardisation: the
    hybrid starts close to the RGB model, not at it. Its RGB filters are the pretrained ones, the rest zero."""
    weights = rgb_weights(HYBRID, tmp_path)
    rgb, five = backbone(HYBRID, weights), backbone(HYBRID, weights, in_chans=5, rgb_bands=[2, 1, 0])
    key = f"{rgb.model.pretrained_cfg['first_conv']}.weight"
    ours, theirs = five.model.state_dict()[key], rgb.model.state_dict()[key]
    assert torch.equal(ours[:, [2, 1, 0]], theirs) and not ours[:, 3:].any()
    assert [f.shape for f in five(torch.rand(1, 5, 64, 64))] == [f.shape for f in rgb(torch.rand(1, 3, 64, 64))]


def test_a_single_band_sees_the_rgb_models_view_of_grey(tmp_path: Path) -> None:
    weights = rgb_weights(VIT, tmp_path)
    norm = {"mean": [0.5] * 3, "std": [0.25] * 3}
    rgb = backbone(VIT, weights, **norm)
    grey = backbone(VIT, weights, in_chans=1, mean=[0.5], std=[0.25])
    x = torch.rand(1, 1, 48, 48)
    with torch.no_grad():
        for ours, theirs in zip(grey(x), rgb(x.expand(1, 3, 48, 48)), strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_a_multi_band_task_trains_and_predicts_at_the_input_size() -> None:
    task = SegmentationTask(backbone={"name": VIT, "model_kwargs": TINY, "in_chans": 4}, num_classes=3,
                            img_size=32, head={"channels": 8})  # fmt: skip
    logits, _ = task.forward_train(torch.rand(2, 4, 40, 56))
    assert logits.shape == (2, 3, 40, 56)
    assert task.example_input_array.shape[1] == 4
    torch.testing.assert_close(task.backbone.mean.flatten()[3], task.backbone.mean.flatten()[:3].mean())


@pytest.mark.parametrize(
    ("bands", "message"),
    [
        ({"in_chans": 0}, r"backbone\.in_chans: 0 must be a positive"),
        ({"in_chans": 4, "rgb_bands": [0, 1]}, r"backbone\.rgb_bands: \[0, 1\] must be three distinct"),
        ({"in_chans": 4, "rgb_bands": [0, 1, 4]}, r"in \[0, in_chans=4\)"),
        ({"in_chans": 4, "mean": [0.5] * 3}, r"backbone\.mean has 3 values but in_chans is 4"),
        ({"in_chans": 2, "std": [0.2, 0.0]}, r"backbone\.std: .* must be positive"),
    ],
)
def test_bad_band_settings_name_the_key(bands: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_backbone_config({"name": VIT, **bands})
