"""The settings of ``SegmentationTask`` as written in a config (decode head, loss terms) and their defaults."""

from __future__ import annotations

from typing import Literal, TypedDict


class UPerNetConfig(TypedDict, total=False):
    """Decode head settings under ``model.init_args.head``.

    Keys: ``name`` (``upernet``, or ``linear``: batch norm + 1x1 conv on the concatenated levels, DINOv2's linear
    evaluation; it uses only ``dropout`` and never has an auxiliary head), ``channels`` (inner width, 512 in mmseg),
    ``pool_scales`` (PPM sizes), ``dropout`` (before the classifier), ``aux_weight`` (loss weight of the auxiliary
    FCN head; 0 = no auxiliary head), ``aux_channels``, ``aux_in_index`` (pyramid level the auxiliary head reads).
    """

    name: Literal["upernet", "linear"]
    channels: int
    pool_scales: list[int]
    dropout: float
    aux_weight: float
    aux_channels: int
    aux_in_index: int


class SegmentationLossConfig(TypedDict, total=False):
    """Loss terms under ``model.init_args.loss``: cross-entropy plus optional smp Dice / Focal / Lovasz terms.

    Keys: ``ce_weight``, ``dice_weight``, ``focal_weight``, ``lovasz_weight``, ``class_weights`` (per-class CE
    weights, or ``median_frequency`` / ``sqrt_median_frequency`` to derive them from the training masks when fitting,
    or ``auto``: ``sqrt_median_frequency`` when some class holds < 1% of the training pixels, else none; see
    ``vitdense.data.recipe_rules``),
    ``label_smoothing``, ``ohem_thresh`` (train the main head's cross-entropy on hard pixels only, as mmseg's OHEM
    sampler: true-class probability below this; null = off) and ``ohem_min_kept`` (fewest pixels kept per batch).
    """

    ce_weight: float
    dice_weight: float
    focal_weight: float
    lovasz_weight: float
    class_weights: list[float] | Literal["median_frequency", "sqrt_median_frequency", "auto"] | None
    label_smoothing: float
    ohem_thresh: float | None
    ohem_min_kept: int


HEAD_DEFAULTS: UPerNetConfig = {
    "name": "upernet",
    "channels": 512,
    "pool_scales": [1, 2, 3, 6],
    "dropout": 0.1,
    "aux_weight": 0.4,
    "aux_channels": 256,
    "aux_in_index": 2,
}
LOSS_DEFAULTS: SegmentationLossConfig = {
    "ce_weight": 1.0,
    "dice_weight": 0.0,
    "focal_weight": 0.0,
    "lovasz_weight": 0.0,
    "class_weights": None,
    "label_smoothing": 0.0,
    "ohem_thresh": None,
    "ohem_min_kept": 100_000,
}


# class_weights names resolved from the training masks in setup("fit") (auto: by vitdense.data.recipe_rules)
WEIGHTS_FROM_MASKS = ("median_frequency", "sqrt_median_frequency", "auto")
CLASS_WEIGHTS_KEY = "vitdense_class_weights"  # checkpoint key of the class weights derived from the training masks
