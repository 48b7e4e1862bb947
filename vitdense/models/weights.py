"""Pretrained weight sources: timm hub (fails fast offline), local timm state dicts and vitdense checkpoints."""

from __future__ import annotations

import importlib
import os
import socket
import threading
import warnings
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from vitdense.models.timm_model import TimmModel, as_timm_model

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".npz", ".ckpt")
EXPORT_METADATA_KEY = "vitdense"  # safetensors metadata of `vitdense export`: {"task": ..., "init_args": ...}
FROZEN_BASE_KEY = "vitdense_frozen_base"  # a LoRA run's checkpoint: the frozen weights left out of its state dict
HUB_HOST = ("huggingface.co", 443)


def local_file_hint(name: str) -> str:
    return (
        f"Point backbone.pretrained at a local timm state dict instead, e.g. `pretrained: /path/to/{name}.safetensors` "
        "(.safetensors/.pth/.bin/.npz, or a vitdense .ckpt), or use `pretrained: false`."
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the weights hub answers within ``timeout`` seconds (DNS included, which has no timeout of its own)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(HUB_HOST, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(result and result[0])


def _hub_weights_cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return False
    repo, _, revision = hub_id.partition("@")
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(repo, filename, revision=revision or None), str):
            return True
    return False


def check_hub_available(name: str) -> None:
    """Raise at once, with what to do, when hub weights for ``name`` are neither cached nor downloadable."""
    if _hub_weights_cached(name):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    if offline or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else f"{HUB_HOST[0]} cannot be reached"
        raise RuntimeError(
            f"backbone.pretrained: true needs timm's hub weights for '{name}', which are not in the local cache, "
            f"and {why}. {local_file_hint(name)}"
        )


def _filter_fn(name: str, model: nn.Module):
    """timm's own checkpoint filter for the model (pos-embed resampling, Swin tables, key remaps)."""
    from timm.models import _registry

    module_name = getattr(_registry, "_model_to_module", {}).get(name)
    module = importlib.import_module(f"timm.models.{module_name}" if module_name else type(model).__module__)
    return getattr(module, "checkpoint_filter_fn", None)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, never unpickling arbitrary objects; a vitdense checkpoint gives its backbone."""
    prefix = "backbone.model."  # a vitdense task's backbone
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:  # read once; the handle is not iterable: f.keys()
            if EXPORT_METADATA_KEY in (f.metadata() or {}):  # `vitdense export`: a whole task, adapters merged
                return {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"Cannot read weights '{path}' safely (weights_only): {err}") from err
    if isinstance(obj, dict) and "state_dict" in obj and "pytorch-lightning_version" in obj:
        if obj.get(FROZEN_BASE_KEY):
            raise ValueError(
                f"Checkpoint '{path}' was trained with LoRA adapters and holds them without the frozen weights they "
                "adapt. Export it with the adapters merged (`vitdense export --config <its config> --ckpt_path "
                f"{path} --format safetensors`) and give that file as backbone.pretrained."
            )
        sd = {k[len(prefix) :]: v for k, v in obj["state_dict"].items() if k.startswith(prefix)}
        if not sd:
            raise ValueError(f"Checkpoint '{path}' has no '{prefix}*' tensors; is it a vitdense checkpoint?")
        return sd
    for key in ("state_dict", "model", "module", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"'{path}' does not hold a state dict (found {type(obj).__name__}).")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def expand_rgb_filters(weight: torch.Tensor, in_chans: int, rgb_bands: list[int] | None = None) -> torch.Tensor:
    """A first convolution's RGB filters (O, 3, kh, kw) made into filters for ``in_chans`` input bands.

    The rule: the bands at ``rgb_bands`` (red, green, blue; default the first three) keep the pretrained filters
    and every other band starts at zero, so the N-band model starts as the RGB model (the extra bands learn from
    there). With fewer than three bands and no ``rgb_bands``, each band gets the sum of the RGB filters over the band
    count: a grey image, seen through any number of bands, gives the RGB model's response to that grey.
    """
    out = weight.new_zeros(weight.shape[0], in_chans, *weight.shape[2:])
    if rgb_bands is None and in_chans < 3:
        out[:] = weight.sum(1, keepdim=True) / in_chans
    else:
        out[:, list(rgb_bands or [0, 1, 2])] = weight
    return out


def adapt_input_convs(sd: dict[str, torch.Tensor], model: TimmModel, rgb_bands: list[int] | None) -> None:
    """Give the RGB first-convolution weights of ``sd`` the band count of ``model`` (``expand_rgb_filters``)."""
    own = model.state_dict()
    first = model.pretrained_cfg.get("first_conv") or ()
    for conv in (first,) if isinstance(first, str) else tuple(first):
        key = f"{conv}.weight"
        if key in sd and key in own and sd[key].ndim == 4 and sd[key].shape[1] == 3 != own[key].shape[1]:
            sd[key] = expand_rgb_filters(sd[key], own[key].shape[1], rgb_bands)


def load_local_weights(model: TimmModel, name: str, path: Path | dict[str, torch.Tensor],
                       rgb_bands: list[int] | None = None) -> None:  # fmt: skip
    """Load a local state dict (a file, or the tensors themselves) into a timm model through timm's filter, its first
    convolution adapted to the model's band count; report missing/unexpected keys."""
    sd = dict(path) if isinstance(path, dict) else read_state_dict(path)
    source = "the RGB model's weights" if isinstance(path, dict) else f"'{path}'"
    adapt_input_convs(sd, model, rgb_bands)
    filter_fn = _filter_fn(name, model)
    if filter_fn is not None:
        sd = filter_fn(sd, model)
    own = model.state_dict()
    # A classifier of another size (or none: dense tasks build the model without one) is not transferred.
    classifiers = model.pretrained_cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    dropped = [
        k
        for k in sd
        if any(k.startswith(c + ".") for c in classifiers) and (k not in own or own[k].shape != sd[k].shape)
    ]
    for k in dropped:
        del sd[k]
    mismatched = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in sd
                  if k in own and own[k].shape != sd[k].shape]  # fmt: skip
    if mismatched:
        raise ValueError(
            f"Weights {source} do not fit '{name}' and timm cannot adapt these shapes: {'; '.join(mismatched[:5])}. "
            "Check the model name and its settings (patch size, embed dim, window size) against the file."
        )
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not any(k.startswith(c + ".") for c in classifiers)]
    if missing or unexpected:
        warnings.warn(
            f"Loaded {source} into '{name}' with {len(missing)} missing key(s) {missing[:8]} and "
            f"{len(unexpected)} unexpected key(s) {unexpected[:8]}; missing tensors keep their random init.",
            stacklevel=2,
        )


def create_with_weights(
    name: str, pretrained: bool | str, kwargs: dict[str, Any], rgb_bands: list[int] | None = None
) -> TimmModel:
    """``timm.create_model`` with vitdense's weight sources (see ``BackboneConfig.pretrained``).

    A model of another band count than 3 (``kwargs["in_chans"]``) gets the RGB weights with its first convolution
    adapted by ``expand_rgb_filters`` (not timm's repeat-and-rescale), whatever the source.
    """
    if isinstance(pretrained, str) and pretrained.lower() in {"true", "false"}:
        pretrained = pretrained.lower() == "true"
    in_chans = int(kwargs.get("in_chans", 3))
    if pretrained and in_chans != 3:
        rgb = create_with_weights(name, pretrained, {**kwargs, "in_chans": 3})
        model = as_timm_model(timm.create_model(name, pretrained=False, **kwargs))
        load_local_weights(model, name, rgb.state_dict(), rgb_bands)
        return model
    if pretrained is True:
        check_hub_available(name)
        try:
            return as_timm_model(timm.create_model(name, pretrained=True, **kwargs))
        except OSError as err:
            raise RuntimeError(
                f"Could not fetch pretrained weights for '{name}': {err}. {local_file_hint(name)}"
            ) from err
    if not pretrained:
        return as_timm_model(timm.create_model(name, pretrained=False, **kwargs))
    path = Path(os.path.expanduser(str(pretrained)))
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone.pretrained: weights file '{path}' for '{name}' does not exist. "
            "Give an existing .safetensors/.pth/.bin/.npz timm state dict or vitdense .ckpt, true for hub weights, "
            "or false."
        )
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ValueError(f"backbone.pretrained: '{path}' is not a weights file (expected one of {WEIGHT_SUFFIXES}).")
    if path.suffix.lower() == ".npz":
        # Big-vision .npz checkpoints have their own loader in timm.
        return as_timm_model(
            timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
        )
    model = as_timm_model(timm.create_model(name, pretrained=False, **kwargs))
    load_local_weights(model, name, path)
    return model
