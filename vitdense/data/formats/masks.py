"""Readers: one annotation format -> the (image, annotation) pairs of a folder and each annotation's class-id mask.

A reader knows a format and nothing of splits, transforms or batching; ``SegmentationFolderDataset`` takes one.
Mask files (class ids or colours) are read here; polygon formats (COCO, LabelMe, CVAT) in ``data.formats.polygons``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict

import numpy as np

from vitdense.data.formats.camvid import SEGNET_CLASSES, SEGNET_VOID, camvid_class_table, camvid_lists, camvid_pairs
from vitdense.data.formats.camvid import SPLITS as CAMVID_SPLITS
from vitdense.data.formats.class_table import ClassTable, ColorLookup
from vitdense.data.formats.coco import read_categories
from vitdense.data.formats.cvat import CvatReader, cvat_labels, cvat_splits, find_cvat_xml
from vitdense.data.formats.folders import IMAGE_EXTENSIONS, pair_folders
from vitdense.data.formats.io import image_size, load_mask, load_mask_any, load_palette_colors
from vitdense.data.formats.label_studio import LabelStudioReader, find_export, label_studio_class_table
from vitdense.data.formats.polygons import CocoReader, LabelMeReader, Labels
from vitdense.data.formats.voc import voc_class_table, voc_folder, voc_pairs
from vitdense.data.formats.yolo import SPLITS as YOLO_SPLITS
from vitdense.data.formats.yolo import YoloExport, YoloReader, find_yaml

MaskType = Literal["auto", "ids", "colors"]


class MaskReader(Protocol):
    """What a segmentation dataset needs from a format."""

    def pairs(self) -> list[tuple[Path, Any]]:
        """Every ``(image path, annotation key)`` of the folder the reader was given, sorted by image."""
        ...

    def size(self, key: Any) -> tuple[int, int]:
        """``(width, height)`` of the annotation (checked against its image's)."""
        ...

    def read(self, key: Any) -> np.ndarray:
        """The ``(H, W)`` int64 class-id mask of an annotation (``ignore_index`` for void)."""
        ...

    def describe(self, key: Any) -> str:
        """The file (and entry) of an annotation, for messages."""
        ...


class MaskFileReader:
    """Masks stored as image files beside the images (same stem): single-channel class ids, or RGB colours mapped
    through a class table (``ColorLookup``)."""

    def __init__(
        self,
        image_dir: Path,
        mask_dir: Path,
        lookup: ColorLookup | None = None,
        mask_type: MaskType = "auto",
    ) -> None:
        """Point the reader at a folder pair.

        Args:
            image_dir: Folder of images.
            mask_dir: Folder of masks with the images' stems.
            lookup: Colour -> class id table; needed for colour masks.
            mask_type: ``ids``: single-channel class ids; ``colors``: colours through ``lookup`` (palette masks through
                their palette); ``auto``: RGB files as colours, single-channel files as ids.
        """
        self.image_dir, self.mask_dir, self.lookup, self.mask_type = image_dir, mask_dir, lookup, mask_type
        if mask_type == "colors" and lookup is None:
            raise ValueError(
                "mask_type is 'colors' but no class colours are given: add root/classes.txt lines `<id> <name> "
                "<r,g,b>`, CVAT's labelmap.txt, or data.classes with a color per class."
            )

    def pairs(self) -> list[tuple[Path, Any]]:
        return pair_folders(self.image_dir, self.mask_dir)

    def size(self, key: Path) -> tuple[int, int]:
        return image_size(key)

    def describe(self, key: Path) -> str:
        return f"'{key}'"

    def read(self, key: Path) -> np.ndarray:
        if self.mask_type == "ids":
            return load_mask(key)
        if self.mask_type == "colors":
            return self.lookup(load_palette_colors(key), key)  # type: ignore[misc]
        mask, is_color = load_mask_any(key)
        if not is_color:
            return mask
        if self.lookup is None:
            raise ValueError(
                f"Mask '{key}' is an RGB colour mask, but the class table gives no colours. Give each class its "
                "colour: root/classes.txt lines `<id> <name> <r,g,b>`, CVAT's labelmap.txt, or data.classes "
                "(name + color)."
            )
        return self.lookup(mask, key)


class VocMaskReader(MaskFileReader):
    """A Pascal VOC layout (``data.formats.voc``): each ``SegmentationClass`` mask with its ``JPEGImages`` image;
    palette indices are class ids, RGB masks go through the class table's colours."""

    def __init__(self, folder: Path, lookup: ColorLookup | None = None, mask_type: MaskType = "auto") -> None:
        """Point the reader at the folder holding ``JPEGImages`` and ``SegmentationClass``."""
        super().__init__(folder / "JPEGImages", folder / "SegmentationClass", lookup, mask_type)
        self.folder = folder

    def pairs(self) -> list[tuple[Path, Any]]:
        return voc_pairs(self.folder)


class CamvidMaskReader(MaskFileReader):
    """CamVid in SegNet's layout (``data.formats.camvid``): the pairs of one list file (``train.txt`` ...); class-id
    masks, whose ``void_id`` (SegNet's 11) becomes ``ignore_index``, or colour masks through the class table."""

    def __init__(
        self,
        root: Path,
        split: str,
        lookup: ColorLookup | None = None,
        mask_type: MaskType = "auto",
        void_id: int | None = None,
        ignore_index: int = 255,
    ) -> None:
        """Point the reader at the export's root and the split whose list file it reads."""
        super().__init__(root / split, root / f"{split}annot", lookup, mask_type)
        self.root, self.split, self.void_id, self.ignore_index = root, split, void_id, ignore_index

    def pairs(self) -> list[tuple[Path, Any]]:
        return camvid_pairs(self.root, self.split)

    def read(self, key: Path) -> np.ndarray:
        mask = super().read(key)
        if self.void_id is not None:
            mask[mask == self.void_id] = self.ignore_index
        return mask


AnnotationFormat = Literal["auto", "masks", "coco", "labelme", "cvat", "voc", "label_studio", "yolo", "camvid"]


class PolygonOptions(TypedDict, total=False):
    """How polygon annotations (COCO, LabelMe, CVAT) are drawn into class-id masks."""

    background: str | None
    """Class of pixels no shape covers, when the classes have it (else ignore_index); default ``background`` (or
    labelme's ``_background_``). LabelMe, whose converter makes that area class 0, needs it: ``null`` makes it void."""
    category_match: Literal["name", "id"]
    """COCO categories map to classes by ``name`` (default) or their ``id`` is the class id."""
    line_width: int
    """Width in pixels of LabelMe line and linestrip shapes (default 10, labelme's own)."""


def labelme_dir(base: Path) -> Path | None:
    """The folder of LabelMe JSON files of ``base``: ``annotations/``, else beside the images in ``images/``, else
    ``base`` itself when it holds images and JSON files side by side (as labelme saves them)."""
    for folder in (base / "annotations", base / "images"):
        if folder.is_dir() and any(folder.glob("*.json")):
            return folder
    if base.is_dir() and any(base.glob("*.json")) and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in base.iterdir()):
        return base
    return None


def detect_format(base: Path, annotations: AnnotationFormat) -> AnnotationFormat:
    """The annotation format of ``base`` (``root`` or ``root/<split>``): ``annotations`` unless ``auto``."""
    if annotations != "auto":
        return annotations
    if (base / "masks").is_dir():
        return "masks"
    if find_yaml(base) is not None:
        return "yolo"
    if find_export(base) is not None:
        return "label_studio"
    if voc_folder(base) is not None:
        return "voc"
    if camvid_lists(base):
        return "camvid"
    if (base / "annotations.json").is_file():
        return "coco"
    if find_cvat_xml(base) is not None:
        return "cvat"
    if labelme_dir(base) is not None:
        return "labelme"
    raise FileNotFoundError(
        f"No annotations found in '{base}': expected masks/ (class-id or colour PNGs), annotations.json (COCO), "
        "annotations.xml (CVAT for images 1.1), LabelMe .json files in annotations/ or beside the images, or a "
        "Pascal VOC export (JPEGImages/ + SegmentationClass/), a Label Studio JSON export (a .json list of tasks), a "
        "YOLO data.yaml, or CamVid's train.txt / val.txt (lines `/train/x.png /trainannot/x.png`)."
    )


def native_class_table(base: Path, annotations: AnnotationFormat, ignore_index: int = 255) -> ClassTable | None:
    """The classes an annotation file states itself: COCO categories (in id order), CVAT labels (with colours)."""
    if not base.is_dir():
        return None
    try:
        fmt = detect_format(base, annotations)
    except FileNotFoundError:
        return None
    if fmt == "coco":
        categories = read_categories(base / "annotations.json")
        return ClassTable(list(categories.values()), source=f"'{base / 'annotations.json'}' categories")
    if fmt == "cvat":
        return cvat_labels(find_cvat_xml(base) or base / "annotations.xml", background=True)
    if fmt == "voc":
        return voc_class_table(voc_folder(base) or base)
    if fmt == "label_studio" and find_export(base) is not None:
        return label_studio_class_table(find_export(base))  # type: ignore[arg-type]
    if fmt == "yolo" and find_yaml(base) is not None:
        return YoloExport(find_yaml(base)).class_table  # type: ignore[arg-type]
    if fmt == "camvid" and camvid_lists(base):
        return camvid_class_table(base, ignore_index)
    return None


def export_splits(base: Path, annotations: AnnotationFormat) -> dict[str, tuple[str, ...]] | None:
    """The splits an export of ``base`` names itself (``{split: its subsets}``: a CVAT project's subsets), or ``None``
    when it names none (the one-folder split applies)."""
    try:
        if detect_format(base, annotations) == "yolo":  # data.yaml's train / val / test
            return {split: (split,) for split in YOLO_SPLITS}
        if detect_format(base, annotations) == "camvid":  # its train.txt / val.txt / test.txt
            return {split: (split,) for split in CAMVID_SPLITS}
        if not (base / "images").is_dir() or detect_format(base, annotations) != "cvat":
            return None
    except FileNotFoundError:  # no annotations: said where the split is read
        return None
    return cvat_splits(find_cvat_xml(base) or base / "annotations.xml")


def make_reader(
    base: Path,
    annotations: AnnotationFormat,
    class_names: list[str],
    ignore_index: int,
    lookup: ColorLookup | None = None,
    mask_type: MaskType = "auto",
    polygons: PolygonOptions | None = None,
    void_classes: tuple[str, ...] = (),
    subsets: tuple[str, ...] | None = None,
) -> MaskReader:
    """The reader of the folder ``base``: its ``images/`` and the annotations of format ``annotations``; ``subsets``:
    only the images of these subsets of the export (one split of a CVAT project, ``export_splits``)."""
    fmt, options, image_dir = detect_format(base, annotations), polygons or {}, base / "images"
    if fmt == "labelme" and labelme_dir(base) == base:  # labelme's own layout: each JSON beside its image
        image_dir = base
    if fmt == "voc":
        folder = voc_folder(base)
        if folder is None:
            raise FileNotFoundError(f"annotations: voc, but '{base}' has no JPEGImages/ and SegmentationClass/.")
        return VocMaskReader(folder, lookup, mask_type)
    if fmt == "yolo":
        if find_yaml(base) is None:
            raise FileNotFoundError(f"annotations: yolo, but '{base}' has no data.yaml (names, train, val).")
        return YoloReader(YoloExport(find_yaml(base)), subsets[0] if subsets else "train")  # type: ignore[arg-type]
    if fmt == "camvid":
        if not camvid_lists(base):
            raise FileNotFoundError(
                f"annotations: camvid, but '{base}' has no train.txt / val.txt / test.txt whose lines are "
                "`/train/x.png /trainannot/x.png` with the masks there."
            )
        void_id = SEGNET_VOID if tuple(class_names) == SEGNET_CLASSES else None  # SegNet's Unlabelled
        return CamvidMaskReader(base, subsets[0] if subsets else "train", lookup, mask_type, void_id, ignore_index)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"Folder '{image_dir}' not found: the images of '{base}' go in images/.")
    labels = Labels(class_names, ignore_index, options.get("background", "background"), void_classes)
    if fmt == "masks":
        if not (base / "masks").is_dir():
            raise FileNotFoundError(f"Folder '{base / 'masks'}' not found (annotations: masks).")
        return MaskFileReader(image_dir, base / "masks", lookup, mask_type)
    if fmt == "label_studio":
        if find_export(base) is None:
            raise FileNotFoundError(f"annotations: label_studio, but '{base}' holds no Label Studio JSON export.")
        return LabelStudioReader(image_dir, find_export(base), labels)  # type: ignore[arg-type]
    if fmt == "coco":
        return CocoReader(image_dir, base / "annotations.json", labels, options.get("category_match", "name"))
    if fmt == "cvat":
        return CvatReader(image_dir, find_cvat_xml(base) or base / "annotations.xml", labels, subsets)
    ann_dir = labelme_dir(base)
    if ann_dir is None:
        raise FileNotFoundError(f"No LabelMe .json files in '{base / 'annotations'}' or '{image_dir}'.")
    return LabelMeReader(image_dir, ann_dir, labels, options.get("line_width", 10))  # says what it decides
