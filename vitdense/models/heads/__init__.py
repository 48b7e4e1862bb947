"""Task heads: each knows only a list of input channels, never the backbone."""

from vitdense.models.heads.classifier import ClassificationHead
from vitdense.models.heads.detectors import DETECTORS, DetectionBody, build_detector
from vitdense.models.heads.linear import LinearHead
from vitdense.models.heads.upernet import FCNHead, UPerHead

__all__ = ["DETECTORS", "ClassificationHead", "DetectionBody", "FCNHead", "LinearHead", "UPerHead", "build_detector"]
