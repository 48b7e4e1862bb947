"""Parameter-efficient fine-tuning of a backbone through the ``peft`` library (LoRA), configured under
``backbone.peft``: the adapters train, the pretrained weights stay frozen, and the adapters merge back into plain
weights for export."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from torch import nn


class PeftConfig(TypedDict, total=False):
    """``backbone.peft``: ``method`` (lora), ``r`` (rank), ``alpha`` (scale numerator: updates are scaled by
    alpha / r), ``target_modules`` (names or suffixes of the Linear layers to adapt, e.g. ``[qkv]``, or
    ``[qkv, proj, fc1, fc2]``), ``dropout`` (on the adapter's input)."""

    method: Literal["lora"]
    r: int
    alpha: float
    target_modules: list[str]
    dropout: float


PEFT_DEFAULTS: PeftConfig = {"method": "lora", "r": 16, "alpha": 32, "target_modules": ["qkv"], "dropout": 0.0}
ADAPTER_MARK = ".lora_"  # in the name of every adapter parameter


def add_adapters(model: nn.Module, cfg: dict[str, Any]) -> nn.Module:
    """Inject LoRA layers into ``model`` in place (peft's ``inject_adapter_in_model``) and freeze everything else.

    Raises:
        ImportError: peft is not installed (it is in the ``dev`` extra; ``pip install peft``).
        ValueError: unknown keys or method, or no layer of the model matches ``target_modules``.
    """
    from vitdense.models.config import merge_config

    cfg = merge_config(cfg, dict(PEFT_DEFAULTS), "backbone.peft")
    if cfg["method"] != "lora":
        raise ValueError(f"backbone.peft.method {cfg['method']!r} is not supported; use 'lora'.")
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:
        raise ImportError("backbone.peft needs the peft library: pip install peft") from err
    targets = list(cfg["target_modules"])
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not any(name == t or name.endswith(f".{t}") for name in linear for t in targets):
        examples = sorted({name.rsplit(".", 1)[-1] for name in linear})
        raise ValueError(
            f"backbone.peft.target_modules {targets} match no Linear layer of the backbone; its Linear layers are "
            f"named {examples}."
        )
    config = LoraConfig(r=cfg["r"], lora_alpha=cfg["alpha"], target_modules=targets, lora_dropout=cfg["dropout"])
    return inject_adapter_in_model(config, model)


def base_name(name: str) -> str:
    """The parameter name of the plain model that an adapted model's parameter belongs to:
    ``blocks.0.attn.qkv.base_layer.weight`` and ``blocks.0.attn.qkv.lora_A.default.weight`` ->
    ``blocks.0.attn.qkv.weight``."""
    if ADAPTER_MARK in name:
        return name.split(ADAPTER_MARK)[0] + ".weight"
    return name.replace(".base_layer.", ".")


def is_adapter(name: str) -> bool:
    return ADAPTER_MARK in name


def merge_adapters(model: nn.Module) -> int:
    """Fold every LoRA layer into its base Linear (peft's ``merge``) and put the plain layer back, in place: the
    model computes the same and has its original parameter names. Returns how many layers were merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
            merged += 1
    return merged
