"""Model parts: timm backbone wrapper, pyramid necks and task heads."""

from vitdense.models.backbone import Backbone, BackboneConfig, check_model_name, resolve_backbone_config
from vitdense.models.heads import FCNHead, UPerHead
from vitdense.models.necks import LayerNormNeck, MultiLevelNeck, build_neck

__all__ = [
    "Backbone",
    "BackboneConfig",
    "FCNHead",
    "LayerNormNeck",
    "MultiLevelNeck",
    "UPerHead",
    "build_neck",
    "check_model_name",
    "resolve_backbone_config",
]
