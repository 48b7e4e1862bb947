"""``TimmModel``: the static type of a timm model as vitdense reads it.

timm's models share no base class that declares ``pretrained_cfg``, ``feature_info`` or ``forward_intermediates``;
to a type checker they are plain ``nn.Module``s, whose unknown attributes read as ``Tensor | Module``. This class
declares what vitdense uses of them. It is a type only: ``timm.create_model`` results are cast to it
(``as_timm_model``) and never are instances of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

if TYPE_CHECKING:

    class TimmModel(nn.Module):
        """What vitdense reads of a timm model (see the module docstring)."""

        pretrained_cfg: dict[str, Any]
        feature_info: list[dict[str, Any]]
        num_features: int

        def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

        def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor: ...

        def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
        ) -> list[torch.Tensor]: ...

        def prune_intermediate_layers(
            self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
        ) -> list[int]: ...

        def set_grad_checkpointing(self, enable: bool = True) -> None: ...

        def no_weight_decay(self) -> set[str]: ...

        def group_matcher(self, coarse: bool = False) -> dict[str, Any]: ...

else:
    TimmModel = nn.Module


def as_timm_model(model: nn.Module) -> TimmModel:
    """``model`` (made by ``timm.create_model``) typed as a ``TimmModel``."""
    return cast("TimmModel", model)
