"""Which layer each backbone parameter belongs to, for layer-wise lr decay (the BEiT / mmseg rule).

BEiT, MAE, mmseg's ``LayerDecayOptimizerConstructor`` and detectron2's ``get_vit_lr_decay_rate`` number a model of
``L`` blocks as: stem (patch embedding, pos-embed, prefix/register tokens) 0, block ``i`` ``i + 1``, and everything
after the last block (final norm, neck, head) ``L + 1``; a parameter of layer ``k`` trains at ``decay ** (L + 1 - k)``.
The numbering is taken from the *whole* timm model, before blocks that a dense head does not use are pruned, so the
last block always gets ``decay ** 1`` and only the head 1.0.
"""

from __future__ import annotations

import re

from timm.models import group_parameters
from timm.optim._param_groups import auto_group_layers

from vitdense.models.timm_model import TimmModel

# timm's group matchers give the final norm the suffix (99999,) ("merge with the previous group"), which would put
# it in the last block's layer; BEiT puts it with the head.
_HEAD_SUFFIX = (99999,)


def _body_patterns(model: TimmModel) -> list[re.Pattern[str]]:
    """The group matcher's stem and block patterns (not the ones it merges into the last block, such as the norm)."""
    matcher = model.group_matcher(coarse=False)
    patterns = []
    for spec in matcher.values():
        for entry in [spec] if isinstance(spec, str) else spec:
            if isinstance(entry, str):
                patterns.append(re.compile(entry))
            elif isinstance(entry, (list, tuple)) and len(entry) == 2 and tuple(entry[1] or ()) != _HEAD_SUFFIX:
                patterns.append(re.compile(entry[0]))
    return patterns


def layer_ids(model: TimmModel) -> tuple[dict[str, int], int]:
    """Layer id of every parameter of a full timm model and the id of the head level (``L + 1``).

    Parameters that timm's group matcher does not place in the stem or a block (final norm, ``fc_norm``, a
    classifier) are at the head level: timm gives an unmatched name a group of its own after the last block, which
    would add one more decay step to every layer (EVA-02's ``fc_norm``).
    """
    if hasattr(model, "group_matcher"):
        ids = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
        body = _body_patterns(model)
        ids = {name: i for name, i in ids.items() if any(p.match(name) for p in body)}
    else:
        ids = auto_group_layers(model)
    head_id = max(ids.values(), default=0) + 1
    return {name: ids.get(name, head_id) for name, _ in model.named_parameters()}, head_id


def layer_scales(ids: dict[str, int], head_id: int, decay: float | None) -> dict[str, float]:
    """lr multiplier per parameter name: ``decay ** (head_id - layer id)``; all 1.0 when ``decay`` is None."""
    return {name: 1.0 if decay is None else float(decay ** (head_id - i)) for name, i in ids.items()}
