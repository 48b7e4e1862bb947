"""Pascal VOC segmentation exports: ``JPEGImages/``, ``SegmentationClass/*.png``, ``ImageSets/Segmentation/*.txt``.

The layout of VOC2012 itself, of datumaro's and CVAT's "PASCAL VOC" and "Segmentation mask 1.1" exports. Masks are
palette PNGs whose index is the class id (255 void); masks saved as RGB (datumaro's assets) are read through the
colours of the class table, VOC's own colour map when the export has no ``labelmap.txt``. ``JPEGImages`` may hold
images without a mask (VOC's detection images): only images with a mask are samples. The split lists are VOC's:
``train.txt`` and ``val.txt`` (``val.txt`` optional: val is then drawn from train), or ``trainval.txt`` alone;
``test.txt`` names images without masks in VOC itself (its test masks are withheld), which are left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from vitdense.data.formats.class_table import ClassTable
from vitdense.data.formats.cvat import SPLIT_OF_SUBSET
from vitdense.data.formats.folders import IMAGE_EXTENSIONS, examples, list_files

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
VOC_VOID_COLOR = (224, 224, 192)  # index 255 of VOC's palette: object boundaries and "difficult" regions
LIST_DIR = Path("ImageSets") / "Segmentation"
MASK_DIR, IMAGE_DIR = "SegmentationClass", "JPEGImages"
LAYOUT = "JPEGImages/<id>.jpg + SegmentationClass/<id>.png + ImageSets/Segmentation/{train,val}.txt (val optional)"


def voc_colormap(n: int = 256) -> np.ndarray:
    """VOC's palette (devkit ``labelcolormap``): class ``i``'s colour from the bits of ``i``, ``(n, 3)`` uint8."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def voc_folder(root: Path) -> Path | None:
    """The folder of a VOC layout at ``root`` (``root``, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``), or None."""
    for folder in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (folder / IMAGE_DIR).is_dir() and (folder / MASK_DIR).is_dir():
            return folder
    return None


def voc_class_table(folder: Path) -> ClassTable:
    """VOC's 21 classes with their palette colours (the table of a VOC export without ``labelmap.txt``)."""
    colors = [tuple(int(v) for v in c) for c in voc_colormap(len(VOC_CLASSES))]
    source = f"Pascal VOC's 21 classes ('{folder}' has no labelmap.txt)"
    return ClassTable(list(VOC_CLASSES), colors, [VOC_VOID_COLOR], source=source)  # type: ignore[arg-type]


def voc_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """``(image, mask)`` of every mask of ``SegmentationClass``, by id; a mask without its image is an error."""
    image_dir, mask_dir = folder / IMAGE_DIR, folder / MASK_DIR
    images = {p.stem: p for p in list_files(image_dir, IMAGE_EXTENSIONS)}
    masks = list_files(mask_dir, (".png",))
    if not masks:
        raise ValueError(f"No .png masks in '{mask_dir}'. A Pascal VOC export holds {LAYOUT}.")
    orphans = sorted(m.name for m in masks if m.stem not in images)
    if orphans:
        raise ValueError(
            f"{len(orphans)} mask(s) in '{mask_dir}' have no image with the same id in '{image_dir}' "
            f"(e.g. {examples(orphans)}). Add the images or remove those masks."
        )
    return [(images[m.stem], m) for m in masks]


def voc_split_lists(folder: Path, pairs: list[tuple[Path, Path]]) -> dict[str, list[str]] | None:
    """The export's split lists (ids), or None when ``ImageSets/Segmentation`` has none.

    ``train.txt``/``val.txt``/``test.txt`` are the splits; ``trainval.txt`` is train when there is neither. A list
    whose images all lack a mask (VOC's ``test.txt``) names an unlabelled split: it is left out, and said. A list
    that names some images without a mask, or ids with no image, is an error naming the list and the ids.
    """
    list_dir = folder / LIST_DIR
    # VOC's list names, and the <Subset>.txt that CVAT's Segmentation mask export writes (Train.txt, Validation.txt)
    names = {"trainval": "trainval", **SPLIT_OF_SUBSET}
    found = sorted(list_dir.glob("*.txt")) if list_dir.is_dir() else []
    lists = {names[p.stem.lower()]: p for p in found if p.stem.lower() in names}
    if not lists:
        return None
    if "train" not in lists and "val" not in lists and "trainval" in lists:
        lists["train"] = lists["trainval"]
    labelled = {image.stem for image, _ in pairs}
    images = {p.stem for p in list_files(folder / IMAGE_DIR, IMAGE_EXTENSIONS)}
    split: dict[str, list[str]] = {}
    for name in ("train", "val", "test"):
        if name not in lists:
            continue
        path = lists[name]
        ids = list(dict.fromkeys(line.split()[0] for line in path.read_text().splitlines() if line.strip()))
        no_image = [i for i in ids if i not in images]
        if no_image:
            raise ValueError(
                f"'{path}' lists {len(no_image)} id(s) with no image in '{folder / IMAGE_DIR}' (e.g. "
                f"{examples(no_image)}). Add the images, or remove those lines."
            )
        unlabelled = [i for i in ids if i not in labelled]
        if not ids:
            continue
        if len(unlabelled) == len(ids):
            rank_zero_info(f"[vitdense] '{path}': its {len(ids)} image(s) have no mask in '{folder / MASK_DIR}' "
                           f"(unlabelled, as VOC's test set), so there is no {name} split")  # fmt: skip
            continue
        if unlabelled:
            raise ValueError(
                f"'{path}' lists {len(unlabelled)} image(s) with no mask '{folder / MASK_DIR}/<id>.png' (e.g. "
                f"{examples(unlabelled)}). Add their masks, or remove those lines from '{path.name}'."
            )
        split[name] = ids
    if "train" not in split:
        listed = sorted(p.name for p in lists.values())
        raise ValueError(
            f"'{list_dir}' has no list of labelled training images (lists there: {listed}). Add train.txt (one image "
            "id per line), or remove ImageSets/Segmentation to have vitdense split the images by seed."
        )
    return split
