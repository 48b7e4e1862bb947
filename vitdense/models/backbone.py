"""Backbone: a raw timm model that returns a list of NCHW feature maps with known channels and strides."""

from __future__ import annotations

import difflib
import math
from typing import Any, TypedDict

import timm
import torch
import torch.nn.functional as F
from timm.models import is_model_in_modules
from torch import nn

from vitdense.models.adapters import PeftConfig, add_adapters, base_name, is_adapter, merge_adapters
from vitdense.models.layer_decay import layer_ids
from vitdense.models.timm_model import TimmModel
from vitdense.models.weights import create_with_weights

# timm modules whose models take `dynamic_img_size` (ViT-like token models and Swin-like windowed ones).
_DYNAMIC_SIZE_MODULES = (
    "vision_transformer",
    "vision_transformer_hybrid",
    "deit",
    "beit",
    "eva",
    "swin_transformer",
    "swin_transformer_v2",
)


class BackboneConfig(TypedDict, total=False):
    """Backbone settings as written in a config under ``model.init_args.backbone``.

    Keys: ``name`` (any timm model name), ``pretrained`` (true = timm hub weights, a path = local
    .safetensors/.pth/.bin/.npz timm state dict, false = random init), ``img_size`` (pos-embed and window tables
    are resampled when it differs from pretraining), ``drop_path_rate``, ``out_indices`` (which blocks or
    stages feed the neck), ``model_kwargs`` (extra keyword arguments for ``timm.create_model``), ``peft``
    (LoRA adapters: only they train in the backbone, see ``vitdense.models.adapters.PeftConfig``), ``in_chans``
    (input bands, e.g. 4 for RGB + near-infrared), ``rgb_bands`` (positions of red, green and blue among them, which
    keep the pretrained filters; the other bands start at zero, see ``vitdense.models.weights.expand_rgb_filters``)
    and ``mean`` / ``std`` (per input band, what ``normalize`` subtracts and divides by; default the pretraining's
    RGB values, and for other bands the mean of those), ``truncate`` (true: a dense head may use a backbone cut after
    the last of ``out_indices``; false, the default: out_indices that stop before the last block are an error, since
    the blocks after them would be dropped with their pretrained weights, e.g. a ViT-B's [3, 5, 7, 11] kept when the
    name changes to a 40-block ViT-g).
    """

    name: str
    pretrained: bool | str
    img_size: int | None
    drop_path_rate: float
    out_indices: list[int] | None
    model_kwargs: dict[str, Any]
    peft: PeftConfig | None
    in_chans: int
    rgb_bands: list[int] | None
    mean: list[float] | None
    std: list[float] | None
    truncate: bool


def resolve_backbone_config(
    backbone: str | BackboneConfig | dict[str, Any],
    pretrained: bool | str | None = None,
    img_size: int | None = None,
    in_chans: int | None = None,
) -> dict[str, Any]:
    """Normalise the ``backbone`` argument of a task (a name or a dict) into a full, plain dict.

    ``pretrained`` and ``img_size`` are the task's shorthands (``img_size`` is linked from the DataModule's training
    crop in the CLI); a backbone key and its shorthand set to different values are an error, not a silent choice.
    """
    cfg: dict[str, Any] = {"name": backbone} if isinstance(backbone, str) else dict(backbone)
    if "name" not in cfg:
        raise ValueError(f"backbone config {cfg} has no 'name'; give a timm model name, e.g. 'vit_base_patch16_224'.")
    unknown = set(cfg) - set(BackboneConfig.__annotations__)
    if unknown:
        raise ValueError(
            f"Unknown backbone key(s) {sorted(unknown)}; valid keys are {sorted(BackboneConfig.__annotations__)}. "
            "Pass other timm.create_model arguments under 'model_kwargs'."
        )
    for key, short in (("pretrained", pretrained), ("img_size", img_size), ("in_chans", in_chans)):
        if short is None:
            continue
        given = cfg.get(key)
        if given is not None and given != short:
            raise ValueError(
                f"backbone.{key} is {given!r} but the task's {key} is {short!r}"
                + {"img_size": " (in the CLI it is the data's training crop size, data.crop_size or data.image_size)",
                   "in_chans": " (in the CLI it is the number of data.bands, 3 for RGB images)"}.get(key, "")
                + f". Set {key} in one place: remove backbone.{key}, or make the two agree."
            )  # fmt: skip
        cfg[key] = short
    cfg.setdefault("pretrained", False)
    cfg.setdefault("img_size", None)
    cfg.setdefault("drop_path_rate", 0.0)
    cfg.setdefault("out_indices", None)
    cfg.setdefault("model_kwargs", {})
    cfg.setdefault("peft", None)
    cfg.setdefault("in_chans", 3)
    cfg.setdefault("rgb_bands", None)
    cfg.setdefault("mean", None)
    cfg.setdefault("std", None)
    cfg.setdefault("truncate", False)
    check_bands(cfg)
    return cfg


def check_bands(cfg: dict[str, Any]) -> None:
    """Reject band settings that cannot be built, naming the key."""
    n = cfg["in_chans"]
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"backbone.in_chans: {n!r} must be a positive number of input bands.")
    rgb = cfg["rgb_bands"]
    if rgb is not None and (len(rgb) != 3 or len(set(rgb)) != 3 or not all(0 <= b < n for b in rgb)):
        raise ValueError(
            f"backbone.rgb_bands: {rgb} must be three distinct positions (red, green, blue) in [0, in_chans={n})."
        )
    for key in ("mean", "std"):
        values = cfg[key]
        if values is not None and len(values) != n:
            raise ValueError(f"backbone.{key} has {len(values)} values but in_chans is {n}; give one per band.")
    if cfg["std"] is not None and min(cfg["std"]) <= 0:
        raise ValueError(f"backbone.std: {cfg['std']} must be positive for every band.")


def band_normalization(cfg: dict[str, Any], pretrained_cfg: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Per-band mean and std: the config's, else the pretraining's RGB values at the RGB bands (at all three for a
    3-band model) and their mean at every other band."""
    rgb_mean = list(pretrained_cfg.get("mean", (0.485, 0.456, 0.406)))
    rgb_std = list(pretrained_cfg.get("std", (0.229, 0.224, 0.225)))
    n = cfg["in_chans"]
    mean, std = [sum(rgb_mean) / 3] * n, [sum(rgb_std) / 3] * n
    rgb = cfg["rgb_bands"] or ([0, 1, 2] if n >= 3 else [])
    for j, band in enumerate(rgb):
        mean[band], std[band] = rgb_mean[j], rgb_std[j]
    return list(cfg["mean"] or mean), list(cfg["std"] or std)


def check_model_name(name: str) -> None:
    """Raise a ValueError suggesting close timm names when ``name`` is not a timm model."""
    if timm.is_model(name):
        return
    candidates = timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown backbone '{name}': not a timm model name.{hint} "
        "List names with `python -c \"import timm; print(timm.list_models('vit_*'))\"`."
    )


def create_timm_model(cfg: dict[str, Any], **extra: Any) -> TimmModel:
    """Create the raw timm model described by a resolved backbone config (see ``resolve_backbone_config``)."""
    name = cfg["name"]
    check_model_name(name)
    kwargs: dict[str, Any] = {"num_classes": 0, "drop_path_rate": cfg["drop_path_rate"], **extra}
    if cfg["img_size"] is not None:
        kwargs["img_size"] = cfg["img_size"]
    if cfg.get("in_chans", 3) != 3:
        kwargs["in_chans"] = cfg["in_chans"]
    if is_model_in_modules(name, _DYNAMIC_SIZE_MODULES):
        kwargs["dynamic_img_size"] = True
    kwargs.update(cfg["model_kwargs"])
    return create_with_weights(name, cfg["pretrained"], kwargs, cfg.get("rgb_bands"))


class Backbone(nn.Module):
    """A timm model exposing a feature pyramid: ``forward(x)`` returns NCHW maps, one per ``out_indices`` entry.

    Inputs are expected in [0, 1]; the backbone normalises them with its own ``pretrained_cfg`` mean/std and pads
    them to a multiple of ``size_divisor`` (callers crop outputs back with the input size).
    """

    mean: torch.Tensor  # buffers (register_buffer), (1, in_chans, 1, 1)
    std: torch.Tensor

    def __init__(self, cfg: dict[str, Any], prune: bool = True, **create_kwargs: Any) -> None:
        """Create the timm model of a resolved backbone config.

        Args:
            cfg: resolved backbone config (see ``resolve_backbone_config``).
            prune: drop the blocks after the last of ``out_indices`` and the final norm/head, which dense heads
                never use (unused parameters would also break DDP). Classification keeps them.
            create_kwargs: extra ``timm.create_model`` arguments (e.g. ``num_classes`` for timm's own classifier).
        """
        super().__init__()
        self.cfg = cfg
        self.model = create_timm_model(cfg, **create_kwargs)
        if not hasattr(self.model, "forward_intermediates"):
            raise ValueError(
                f"Backbone '{cfg['name']}' has no forward_intermediates in timm, so it cannot feed a dense head. "
                "Use a ViT/DeiT/Swin/hybrid model (e.g. 'vit_base_patch16_224', 'swin_tiny_patch4_window7_224')."
            )
        # channels_last when the task's channels_last option is on (set at set-up); contiguous NCHW otherwise
        self.memory_format = torch.contiguous_format
        self.in_chans = int(cfg.get("in_chans", 3))
        mean, std = band_normalization({"in_chans": 3, "rgb_bands": None, "mean": None, "std": None, **cfg},
                                       self.model.pretrained_cfg)  # fmt: skip
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), False)
        info = self.model.feature_info
        # The one answer to "is this a plain ViT" (all blocks at one stride) that necks and detectors use.
        self.hierarchical = is_hierarchical(info)
        self.out_indices = list(cfg["out_indices"]) if cfg["out_indices"] is not None else default_out_indices(info)
        for i in self.out_indices:
            if not -len(info) <= i < len(info):
                raise ValueError(f"backbone.out_indices: {i} is out of range for '{cfg['name']}' ({len(info)} blocks).")
        self.out_indices = [i % len(info) for i in self.out_indices]
        if prune and max(self.out_indices) < len(info) - 1 and not cfg.get("truncate"):
            last, n = max(self.out_indices), len(info)
            raise ValueError(
                f"backbone.out_indices {list(cfg['out_indices'])} stop at block/stage {last} of '{cfg['name']}', which "
                f"has {n}: the {n - 1 - last} after it would be dropped, pretrained weights and all. Give out_indices "
                f"that end at {n - 1} (or remove the key: the default for this model is {default_out_indices(info)}), "
                "or set backbone.truncate: true to cut the backbone there on purpose."
            )
        self.out_channels = [int(info[i]["num_chs"]) for i in self.out_indices]
        self.strides = [int(info[i]["reduction"]) for i in self.out_indices]
        self.size_divisor = self._size_divisor()
        # Layer ids for lr decay come from the whole model, before pruning (see vitdense.models.layer_decay).
        self.layer_ids, self.head_layer_id = layer_ids(self.model)
        if prune and hasattr(self.model, "prune_intermediate_layers"):
            self.model.prune_intermediate_layers(sorted(set(self.out_indices)), prune_norm=True, prune_head=True)
        # Prefix tokens (CLS, distillation) are dropped by forward_intermediates; ViT-likes take return_prefix_tokens.
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0))
        # DeiT-distilled: the classifier reads the CLS and the distillation token separately and averages.
        self.num_pooled = 2 if getattr(self.model, "dist_token", None) is not None else 1
        # LoRA after the pretrained weights are in: adapter parameters take the layer of the weight they adapt.
        self.adapters = bool(cfg.get("peft"))
        if self.adapters:
            add_adapters(self.model, cfg["peft"])
            self.layer_ids = {name: self.layer_ids[base_name(name)] for name, _ in self.model.named_parameters()}

    def requires_grad_(self, requires_grad: bool = True) -> Backbone:
        """As ``nn.Module.requires_grad_``; with adapters, only the adapters ever train (the base stays frozen)."""
        super().requires_grad_(requires_grad)
        if self.adapters:
            for name, p in self.model.named_parameters():
                if not is_adapter(name):
                    p.requires_grad_(False)
        return self

    def merge_adapters(self) -> None:
        """Fold the LoRA adapters into the weights (same outputs, plain timm parameter names); from then on
        ``requires_grad_`` reaches every weight again."""
        if not self.adapters:
            return
        by_base = {base_name(name): layer for name, layer in self.layer_ids.items()}
        merge_adapters(self.model)
        self.adapters = False
        self.layer_ids = {name: by_base[name] for name, _ in self.model.named_parameters()}

    def select_levels(self, positions: list[int]) -> None:
        """Keep only some of the ``out_indices`` levels (by position), e.g. ``[-1]`` for the last block alone."""
        self.out_indices = [self.out_indices[p] for p in positions]
        self.out_channels = [self.out_channels[p] for p in positions]
        self.strides = [self.strides[p] for p in positions]

    def _size_divisor(self) -> int:
        # The model's total stride: windowed stages (Swin) pad to whole windows internally, patch embeds do not.
        return max(int(f["reduction"]) for f in self.model.feature_info)

    @property
    def embed_dim(self) -> int:
        """Channels of the pooled embedding (``forward_pooled``)."""
        return int(self.model.num_features)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (``in_chans`` bands; [0, 1] RGB by default) to the backbone's normalisation (per band ``mean``
        and ``std``, in ``memory_format``); pixels without data (NaN, from rasters) become 0, the mean."""
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if not torch.compiler.is_exporting():
            x = torch.nan_to_num(x, nan=0.0)
        return x.contiguous(memory_format=self.memory_format)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Pad bottom/right to a multiple of ``size_divisor`` (with zeros, i.e. the mean colour after normalising)."""
        h, w = x.shape[-2:]
        d = self.size_divisor
        ph, pw = math.ceil(h / d) * d - h, math.ceil(w / d) * d - w
        # Always padded in an export: a branch on the (symbolic) size would fix the graph to one height and width.
        return F.pad(x, (0, pw, 0, ph)) if torch.compiler.is_exporting() or ph or pw else x

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of ``out_indices`` for already normalised images whose sides are multiples of the stride."""
        # timm returns each requested block once, in order; out_indices may repeat a block (a ViT with < 4 blocks).
        unique = sorted(set(self.out_indices))
        maps = self.model.forward_intermediates(x, indices=unique, output_fmt="NCHW", intermediates_only=True)
        return [maps[unique.index(i)] for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the feature maps of ``out_indices`` for [0, 1] images ``x`` of any size."""
        return self.features(self.pad(self.normalize(x)))

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled embedding after the final norm: (B, D), or (B, 2, D) with CLS and distillation token (DeiT).

        CLS token, or the mean of the tokens where a model has none (timm's ``forward_head(pre_logits=True)``).
        """
        tokens = self.model.forward_features(self.pad(self.normalize(x)))
        if self.num_pooled == 2:
            return tokens[:, :2]
        return self.model.forward_head(tokens, pre_logits=True)


def is_hierarchical(feature_info: list[dict[str, Any]]) -> bool:
    """Whether a timm model's feature maps come at several strides (Swin, hybrids' stages) or one (a plain ViT)."""
    return len({int(f["reduction"]) for f in feature_info}) > 1


def default_out_indices(feature_info: list[dict[str, Any]]) -> list[int]:
    """Four levels: every stage of a hierarchical model, or four blocks spread over a plain ViT's depth."""
    n = len(feature_info)
    if is_hierarchical(feature_info):
        return list(range(n))[-4:]
    if n == 12:
        return [3, 5, 7, 11]  # BEiT / MAE segmentation setting for ViT-B
    if n == 24:
        return [7, 11, 15, 23]  # BEiT-L / ViT-Adapter-L
    # Quarter spacing otherwise: 32 blocks (ViT-H) -> [7, 15, 23, 31]; 40 (ViT-g, EVA) -> [9, 19, 29, 39], as EVA's
    # UPerNet uses.
    if n < 4:
        return [min(n - 1, k * n // 4) for k in range(4)]  # blocks repeat: the pyramid still has four levels
    return sorted({max(0, round(n * k / 4) - 1) for k in (1, 2, 3, 4)})
