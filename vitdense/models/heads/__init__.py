"""Task heads: each knows only a list of input channels, never the backbone."""

from vitdense.models.heads.classifier import ClassificationHead
from vitdense.models.heads.upernet import FCNHead, UPerHead

__all__ = ["ClassificationHead", "FCNHead", "UPerHead"]
