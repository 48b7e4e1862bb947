"""Segmentation benchmarks read from their official download layouts: ADE20K, Cityscapes, Pascal VOC 2012.

(COCO 2017, a detection and instance benchmark, is in ``vitdense.data.datamodules.coco``.)

Each is a ``SegmentationFolderDataModule`` with fixed classes, ``ignore_index`` 255, its own way of listing the
``(image, mask)`` pairs of a split and, where the stored ids are not the training ids, a lookup table applied to
every mask. Test annotations of all three are withheld by their benchmark servers, so ``test`` reads the official
validation split, as mmsegmentation does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from vitdense.data.datamodules.base import Split
from vitdense.data.datamodules.segmentation import SegmentationFolderDataModule, SegmentationFolderDataset
from vitdense.data.formats.folders import examples, pair_folders
from vitdense.data.formats.io import load_mask
from vitdense.data.formats.voc import VOC_CLASSES
from vitdense.data.registry import register_datamodule

IGNORE_INDEX = 255

# mmsegmentation's ADE20KDataset.METAINFO order (SceneParsing objectInfo150), with its stray space in "bed " dropped.
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
# cityscapesScripts labels.py: labelId of each trainId 0..18; every other id (void, parking, rail track, guard
# rail, bridge, tunnel, polegroup, caravan, trailer, license plate) is ignored.
CITYSCAPES_TRAIN_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def ade20k_label_map() -> np.ndarray:
    """mmseg's ``reduce_zero_label``: 0 ("other") -> 255, k -> k - 1, 255 stays 255."""
    lut = np.arange(256, dtype=np.int64) - 1
    lut[0] = lut[255] = IGNORE_INDEX
    return lut


def cityscapes_label_map() -> np.ndarray:
    """Cityscapes labelIds (0..33) -> the 19 trainIds, everything else -> 255."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[list(CITYSCAPES_TRAIN_LABEL_IDS)] = np.arange(len(CITYSCAPES_TRAIN_LABEL_IDS))
    return lut


def _require_dirs(layout: str, *folders: Path) -> None:
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"Folder '{folder}' not found. Expected the official layout {layout}.")


class ADE20KDataset(SegmentationFolderDataset):
    """ADE20K SceneParsing (ADEChallengeData2016): ``images/{training,validation}/*.jpg`` + ``annotations/*/*.png``."""

    LAYOUT = (
        "root/ADEChallengeData2016/images/{training,validation}/*.jpg + "
        "root/ADEChallengeData2016/annotations/{training,validation}/*.png (root may also be ADEChallengeData2016)"
    )
    SPLITS = {"train": "training", "val": "validation", "test": "validation"}

    def find_pairs(self) -> list[tuple[Path, Path]]:
        """Pair ``images/<split>/X.jpg`` with ``annotations/<split>/X.png``."""
        base = self.root / "ADEChallengeData2016" if (self.root / "ADEChallengeData2016").is_dir() else self.root
        split = self.SPLITS[self.split]
        image_dir, mask_dir = base / "images" / split, base / "annotations" / split
        _require_dirs(self.LAYOUT, self.root, image_dir, mask_dir)
        return pair_folders(image_dir, mask_dir)


class CityscapesDataset(SegmentationFolderDataset):
    """Cityscapes fine annotations: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` + ``gtFine/.../*_labelIds.png``.

    Where an image has no ``_gtFine_labelIds.png`` but its ``_gtFine_instanceIds.png`` (datumaro's and CVAT's
    Cityscapes exports write only these), the labelIds are read from it exactly: cityscapesScripts writes
    ``labelId * 1000 + instance`` for instances and the labelId itself elsewhere.
    """

    LAYOUT = (
        "root/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png + "
        "root/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png"
    )
    SPLITS = {"train": "train", "val": "val", "test": "val"}
    IMAGE_SUFFIX = "_leftImg8bit.png"
    MASK_SUFFIX = "_gtFine_labelIds.png"
    INSTANCE_SUFFIX = "_gtFine_instanceIds.png"

    def find_pairs(self) -> list[tuple[Path, Path]]:
        """Pair each image with the labelIds (else instanceIds) mask of its ``<city>/<city>_<seq>_<frame>`` prefix."""
        split = self.SPLITS[self.split]
        image_dir, mask_dir = self.root / "leftImg8bit" / split, self.root / "gtFine" / split
        _require_dirs(self.LAYOUT, self.root, image_dir, mask_dir)
        images = self._by_prefix(image_dir, self.IMAGE_SUFFIX)
        if not images:
            raise ValueError(f"No '<city>/*{self.IMAGE_SUFFIX}' images found in '{image_dir}'. Expected {self.LAYOUT}.")
        masks = self._by_prefix(mask_dir, self.MASK_SUFFIX)
        instances = self._by_prefix(mask_dir, self.INSTANCE_SUFFIX)
        missing = sorted(k for k in images if k not in masks and k not in instances)
        if missing:
            looked = mask_dir / f"{missing[0]}{self.MASK_SUFFIX}"
            raise FileNotFoundError(
                f"'{looked}' not found (nor its {self.INSTANCE_SUFFIX}), the mask of '{images[missing[0]]}'"
                + (f"; {len(missing)} images lack theirs" if len(missing) > 1 else "")
                + f". Add the gtFine masks (cityscapesScripts' labelIds) or remove those images. Layout: {self.LAYOUT}."
            )
        return [(images[k], masks.get(k, instances.get(k))) for k in sorted(images)]  # type: ignore[misc]

    def load_mask(self, key: Any) -> np.ndarray:
        """The train-id mask of a labelIds file, or of an instanceIds file through its labelIds."""
        if str(key).endswith(self.INSTANCE_SUFFIX):
            ids = load_mask(key)
            mask = self._relabel(np.where(ids >= 1000, ids // 1000, ids), key)
            self._check_mask(mask, key)
            return mask
        return super().load_mask(key)

    @staticmethod
    def _by_prefix(folder: Path, suffix: str) -> dict[str, Path]:
        return {f"{p.parent.name}/{p.name[: -len(suffix)]}": p for p in sorted(folder.glob(f"*/*{suffix}"))}


class VOCSegmentationDataset(SegmentationFolderDataset):
    """Pascal VOC 2012: ids from ``ImageSets/Segmentation/<list>.txt``, ``JPEGImages/<id>.jpg`` + palette masks."""

    LAYOUT = (
        "root/VOCdevkit/VOC2012/{JPEGImages/<id>.jpg, SegmentationClass/<id>.png, "
        "ImageSets/Segmentation/{train,val}.txt} (root may also be VOCdevkit or VOC2012)"
    )

    def __init__(
        self,
        root: str | Path,
        split: str,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        transform: Callable[..., dict[str, Any]] | None = None,
        train_list: str = "train",
        mask_folder: str = "SegmentationClass",
    ) -> None:
        """Read the split's id list and check its files.

        Args:
            root: Folder holding ``VOCdevkit``, or ``VOCdevkit`` or ``VOC2012`` itself.
            split: ``train``, ``val`` or ``test`` (which reads ``val``).
            num_classes: Number of classes (21).
            ignore_index: Mask value of void pixels (255 on object boundaries).
            transform: Albumentations pipeline; defaults to ``segmentation_eval_transform()``.
            train_list: Id list of the train split, ``ImageSets/Segmentation/<train_list>.txt``.
            mask_folder: Folder of the masks inside ``VOC2012``.
        """
        self.list_names = {"train": train_list, "val": "val", "test": "val"}
        self.mask_folder = mask_folder
        super().__init__(root, split, num_classes, ignore_index, transform)

    def _voc_dir(self) -> Path:
        candidates = [self.root, self.root / "VOC2012", self.root / "VOCdevkit" / "VOC2012"]
        for folder in candidates:
            if (folder / "JPEGImages").is_dir():
                return folder
        looked = ", ".join(f"'{c / 'JPEGImages'}'" for c in candidates)
        raise FileNotFoundError(
            f"Pascal VOC 2012 not found under '{self.root}' (no {looked}). Expected the official layout {self.LAYOUT}."
        )

    def find_pairs(self) -> list[tuple[Path, Path]]:
        """Pair ``JPEGImages/<id>.jpg`` with ``<mask_folder>/<id>.png`` for every id of the split's list."""
        voc = self._voc_dir()
        list_dir, mask_dir = voc / "ImageSets" / "Segmentation", voc / self.mask_folder
        _require_dirs(self.LAYOUT, list_dir, mask_dir)
        id_file = list_dir / f"{self.list_names[self.split]}.txt"
        if not id_file.is_file():
            found = sorted(p.name for p in list_dir.glob("*.txt"))
            raise FileNotFoundError(
                f"Id list '{id_file}' not found (lists in '{list_dir}': {found or 'none'}). "
                f"Expected the official layout {self.LAYOUT}."
            )
        ids = sorted({line.split()[0] for line in id_file.read_text().splitlines() if line.strip()})
        if not ids:
            raise ValueError(f"Id list '{id_file}' is empty; it should hold one image id per line.")
        pairs = [(voc / "JPEGImages" / f"{i}.jpg", mask_dir / f"{i}.png") for i in ids]
        missing = [p.name for pair in pairs for p in pair if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} file(s) listed by '{id_file}' are missing from '{voc}' (e.g. {examples(missing)}). "
                f"Expected the official layout {self.LAYOUT}."
            )
        return pairs


class _BenchmarkDataModule(SegmentationFolderDataModule):
    """A folder DataModule of a benchmark: the subclasses differ only in their class attributes.

    ``CLASSES`` fixes the classes (``root/classes.txt`` is not read), ``DATASET`` reads the official layout and
    ``LABEL_MAP`` (if any) turns the stored mask ids into training ids. ``ignore_index`` is 255.
    """

    CLASSES: tuple[str, ...] = ()
    DATASET: type[SegmentationFolderDataset] = SegmentationFolderDataset
    LABEL_MAP: Callable[[], np.ndarray] | None = None

    def __init__(
        self,
        root: str,
        crop_size: int = 512,
        eval_size: int | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        color_jitter: float = 0.2,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        predict_dir: str | None = None,
    ) -> None:
        """Set up the DataModule; the folders are scanned in ``setup``.

        Args:
            root: The benchmark's folder, in its official download layout (see the class).
            crop_size: Side of the square training crops.
            eval_size: Short side that val/test/predict images are resized to; ``None`` keeps their size.
            scale_range: Range of the random rescale factor applied before cropping in training.
            color_jitter: Brightness/contrast/saturation jitter of training crops (hue a quarter of it); 0 = off.
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (0 loads in the main process).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
            predict_dir: Folder of images to run ``predict`` on.
        """
        super().__init__(
            root, ignore_index=IGNORE_INDEX, crop_size=crop_size, eval_size=eval_size, scale_range=scale_range,
            color_jitter=color_jitter, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
            predict_dir=predict_dir,
        )  # fmt: skip

    def _resolve_classes(self, num_classes: int | None, class_names: list[str] | None) -> tuple[int, list[str]]:
        return len(self.CLASSES), list(self.CLASSES)

    def dataset_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``DATASET`` beyond root, split, classes and transform."""
        label_map = type(self).LABEL_MAP
        return {"label_map": label_map()} if label_map is not None else {}

    def _labelled_dataset(self, split: Split, transform: Callable[..., dict[str, Any]] | None) -> Dataset:
        return self.DATASET(self.root, split, self.num_classes, self.ignore_index, transform, **self.dataset_kwargs())


@register_datamodule
class ADE20KDataModule(_BenchmarkDataModule):
    """ADE20K SceneParsing, 150 classes, from ``root/ADEChallengeData2016/{images,annotations}/{training,validation}``.

    Annotation 0 ("other") is ignored (255) and ids 1..150 become classes 0..149, as mmsegmentation's
    ``reduce_zero_label``. ``test`` reads the validation split (test annotations are not public). Val/test images
    are resized to a short side of 512 by default, as mmsegmentation's ADE20K test pipeline does.
    """

    CLASSES = ADE20K_CLASSES
    DATASET = ADE20KDataset
    LABEL_MAP = ade20k_label_map

    def __init__(self, root: str, eval_size: int | None = 512, **kwargs: Any) -> None:
        """Set up the DataModule; every other argument is the benchmarks' shared one (crop_size, batch_size, ...).

        Args:
            root: Folder holding ``ADEChallengeData2016``, or that folder itself.
            eval_size: Short side that val/test/predict images are resized to; ``None`` keeps their size.
        """
        super().__init__(root, eval_size=eval_size, **kwargs)


@register_datamodule
class CityscapesDataModule(_BenchmarkDataModule):
    """Cityscapes fine annotations, 19 classes, from ``root/leftImg8bit`` + ``root/gtFine`` (the official zips).

    The 34 ``labelIds`` are mapped to the 19 evaluation ``trainIds`` on load, everything else to 255, so the
    ``*_labelTrainIds.png`` files of cityscapesScripts are not needed. ``test`` reads ``val`` (test labels are
    withheld). Published recipes train on 512x1024 crops of the 1024x2048 images; crops here are square, so use
    ``crop_size: 1024`` (or 769) to match their area on large GPUs. ``root`` holds ``leftImg8bit`` and ``gtFine``.
    """

    CLASSES = CITYSCAPES_CLASSES
    DATASET = CityscapesDataset
    LABEL_MAP = cityscapes_label_map


@register_datamodule
class VOCSegmentationDataModule(_BenchmarkDataModule):
    """Pascal VOC 2012 segmentation, 21 classes (background + 20 objects), from ``VOCdevkit/VOC2012``.

    Masks are the palette PNGs of ``SegmentationClass`` (indices 0..20, 255 on object boundaries = ignored).
    For the 10,582-image augmented set most papers train on, put SBD's masks in a folder next to
    ``SegmentationClass`` and its id list in ``ImageSets/Segmentation``, then set ``mask_folder`` and
    ``train_list``. ``test`` reads ``val`` (test masks are withheld). ``root`` holds ``VOCdevkit``, or is
    ``VOCdevkit`` or ``VOC2012`` itself.
    """

    CLASSES = VOC_CLASSES
    DATASET = VOCSegmentationDataset

    def __init__(
        self, root: str, train_list: str = "train", mask_folder: str = "SegmentationClass", **kwargs: Any
    ) -> None:
        """Set up the DataModule; every other argument is the benchmarks' shared one (crop_size, batch_size, ...).

        Args:
            root: Folder holding ``VOCdevkit``, or ``VOCdevkit`` or ``VOC2012`` itself.
            train_list: Id list of the train split, ``ImageSets/Segmentation/<train_list>.txt`` (e.g. ``trainaug``).
            mask_folder: Folder of the masks inside ``VOC2012`` (e.g. ``SegmentationClassAug``).
        """
        super().__init__(root, **kwargs)
        self.train_list = train_list
        self.mask_folder = mask_folder

    def dataset_kwargs(self) -> dict[str, Any]:
        return {"train_list": self.train_list, "mask_folder": self.mask_folder}
