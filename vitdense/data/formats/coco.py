"""COCO annotation files: reading and validating the JSON (images, categories, boxes), shared by every COCO reader.

Boxes are turned into ``xyxy`` pixels of the original image by the box policy of ``scan_annotations``.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitdense.data.formats.folders import examples
from vitdense.data.formats.io import image_size as read_image_size

LAYOUT = "root/{split}/images/ + root/{split}/annotations.json (COCO format)"


@dataclass
class CocoRecord:
    """One image of a COCO split after validation: file, JSON size, its kept boxes (xyxy, clipped) and, when masks
    were asked for, each kept box's ``segmentation`` (polygons or RLE, decoded on access) and annotation id.

    LabelMe and CVAT shapes (``data.formats.objects``) make the same records: their segmentations are callables that
    draw the shape's mask, and ``source`` names the file the record comes from.
    """

    path: Path
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    segmentations: list[Any] = field(default_factory=list)
    ann_ids: list[Any] = field(default_factory=list)
    source: Path | None = None


# subset names of datumaro's / CVAT's COCO export (annotations/instances_<subset>.json), any case -> vitdense splits
SPLIT_OF_SUBSET = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                   "test": "test", "testing": "test"}  # fmt: skip


def coco_export(root: Path) -> dict[str, tuple[Path, Path]] | None:
    """``{split: (image folder, JSON)}`` of a COCO export as datumaro and CVAT ("COCO 1.0") write it:
    ``annotations/instances_<subset>.json`` + ``images/<subset>/<file_name>`` (or ``images/<file_name>``), where
    ``file_name`` may hold folders (``JPEGImages/x.jpg``). One subset of any name (CVAT's ``default``) is ``train``,
    to be split by seed; None when ``root`` is not laid out so."""
    folder = root / "annotations"
    files = sorted(folder.glob("instances_*.json")) if folder.is_dir() and not (root / "train").is_dir() else []
    out: dict[str, tuple[Path, Path]] = {}
    for path in files:
        subset = path.stem[len("instances_") :]
        split = "train" if len(files) == 1 else SPLIT_OF_SUBSET.get(subset.lower())
        if split is None or split in out:
            what = "is not a split name" if split is None else f"is a second {split} subset"
            raise ValueError(
                f"'{path}': subset '{subset}' {what} (train/training, val/valid/validation, test/testing, any case). "
                "Rename the file to instances_train.json, instances_val.json or instances_test.json."
            )
        images = root / "images" / subset
        out[split] = (images if images.is_dir() else root / "images", path)
    if files and "train" not in out:
        raise ValueError(f"'{folder}' has no training subset ({[p.name for p in files]}); add instances_train.json.")
    return out or None


def read_coco_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"Annotation file '{path}' not found. Expected the layout {LAYOUT}.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"'{path}' is not valid JSON: {err}. Check the file is a COCO annotation file.") from err
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"'{path}' has no 'images' list; is it a COCO annotation file ({LAYOUT})?")
    return data


def parse_categories(categories: Any, path: Path) -> dict[int, str]:
    if not isinstance(categories, list) or not categories:
        raise ValueError(f"'{path}' has no 'categories'. List each category as {{\"id\": ..., \"name\": ...}}.")
    out: dict[int, str] = {}
    for cat in categories:
        if not isinstance(cat, dict) or "id" not in cat:
            raise ValueError(f"'{path}' has a category without an id: {cat!r}. Give each category an 'id'.")
        if int(cat["id"]) in out:
            raise ValueError(f"'{path}' lists category id {cat['id']} twice. Give each category its own id.")
        out[int(cat["id"])] = str(cat.get("name", f"class_{cat['id']}"))
    return dict(sorted(out.items()))


def read_categories(path: str | Path) -> dict[int, str]:
    """Return ``{category id: name}`` of a COCO file, sorted by id (label ``i`` is the ``i``-th id).

    Only the ``categories`` list is decoded when it can be found in the text (a full parse of a large training
    file takes seconds and much memory); otherwise the whole file is parsed.

    Args:
        path: COCO annotation JSON.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file has no categories, or two share an id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Annotation file '{path}' not found. Expected the layout {LAYOUT}.")
    text = path.read_text()
    # Inside a JSON string a quote is escaped, so an unescaped '"categories":' is a key; the top-level one is
    # usually the last (COCO writes it after images and annotations).
    for match in reversed(list(re.finditer(r'"categories"\s*:\s*(?=\[)', text))):
        try:
            categories, _ = json.JSONDecoder().raw_decode(text, match.end())
        except json.JSONDecodeError:
            break
        if isinstance(categories, list) and all(isinstance(c, dict) and "id" in c for c in categories):
            return parse_categories(categories, path)
    return parse_categories(read_coco_json(path).get("categories"), path)


def scan_annotations(
    data: dict[str, Any], images: Path, annotations: Path, categories: dict[int, str], masks: bool = False
) -> tuple[list[CocoRecord], dict[str, int]]:
    """Validate a parsed COCO file against its image folder; its records and the box-policy counts.

    Every image entry must name an existing file and every annotation a listed image and a known category (else a
    clear error). Crowd annotations are skipped, boxes with non-positive size or entirely outside their image
    dropped and the others clipped to it; the counts say how many of each (see ``warn_box_policy``). With ``masks``
    every kept annotation needs a ``segmentation`` (polygons within the image, or RLE of the image's size).
    """
    if not images.is_dir():
        raise FileNotFoundError(
            f"Image folder '{images}' (for '{annotations}') does not exist. Expected the layout "
            f"{LAYOUT}, or set the split's *_images path."
        )
    label_of = {cat_id: i for i, cat_id in enumerate(sorted(categories))}
    records: dict[int, CocoRecord] = {}
    missing = []
    for img in data["images"]:
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise ValueError(
                f"'{annotations}' has an image entry without 'id' or 'file_name': {img!r}. COCO image "
                "entries need both (plus 'width' and 'height')."
            )
        if img["id"] in records:
            raise ValueError(f"'{annotations}' lists image id {img['id']} twice. Give each its own id.")
        path = images / img["file_name"]
        if not path.is_file():
            missing.append(img["file_name"])
            continue
        if "width" in img and "height" in img:
            width, height = int(img["width"]), int(img["height"])
        else:
            width, height = read_image_size(path)
        records[img["id"]] = CocoRecord(path, height, width, np.zeros((0, 4)), np.zeros(0, np.int64))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) listed in '{annotations}' are missing from '{images}' "
            f"(e.g. {examples(missing)}). Add the files, fix 'file_name', or remove those image entries."
        )

    boxes: dict[int, list[list[float]]] = {i: [] for i in records}
    labels: dict[int, list[int]] = {i: [] for i in records}
    counts = {"clipped": 0, "non-positive": 0, "outside": 0, "crowd": 0}
    for index, ann in enumerate(data.get("annotations") or []):
        ann_id = ann.get("id", f"#{index}")
        if ann.get("image_id") not in records:
            raise ValueError(
                f"Annotation id {ann_id} in '{annotations}' refers to image id {ann.get('image_id')}, "
                "which is not in its 'images' list. Add the image entry or remove the annotation."
            )
        if ann.get("category_id") not in label_of:
            raise ValueError(
                f"Annotation id {ann_id} in '{annotations}' has category id {ann.get('category_id')}, "
                f"which is not among the category ids {list(label_of)}. Fix the annotation or add the "
                "category to the training annotations' 'categories'."
            )
        if ann.get("iscrowd", 0):
            counts["crowd"] += 1
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list | tuple) or len(bbox) != 4:
            raise ValueError(
                f"Annotation id {ann_id} in '{annotations}' has bbox {bbox!r}; COCO boxes are [x, y, w, h]."
            )
        x, y, w, h = (float(v) for v in bbox)
        if not (w > 0 and h > 0):
            counts["non-positive"] += 1
            continue
        record = records[ann["image_id"]]
        x0, y0 = min(max(x, 0.0), record.width), min(max(y, 0.0), record.height)
        x1, y1 = min(max(x + w, 0.0), record.width), min(max(y + h, 0.0), record.height)
        if x1 <= x0 or y1 <= y0:
            counts["outside"] += 1
            continue
        counts["clipped"] += (x0, y0, x1, y1) != (x, y, x + w, y + h)
        boxes[ann["image_id"]].append([x0, y0, x1, y1])
        labels[ann["image_id"]].append(label_of[ann["category_id"]])
        if masks:
            check_segmentation(ann.get("segmentation"), record.height, record.width, f"{ann_id} in '{annotations}'")
            record.segmentations.append(ann["segmentation"])
            record.ann_ids.append(ann_id)
    for image_id, record in records.items():
        record.boxes = np.asarray(boxes[image_id], dtype=np.float64).reshape(-1, 4)
        record.labels = np.asarray(labels[image_id], dtype=np.int64)
    return list(records.values()), counts


def warn_box_policy(annotations: Path, counts: dict[str, int]) -> None:
    """One warning per file with the counts of clipped, dropped and skipped boxes (nothing is silent)."""
    parts = {
        "clipped": "clipped {} box(es) to the image",
        "non-positive": "dropped {} with non-positive width or height",
        "outside": "dropped {} lying entirely outside their image",
        "crowd": "skipped {} iscrowd=1 annotation(s)",
        "void": "skipped {} shape(s) of void labels",
    }
    kept = [parts[name].format(n) for name, n in counts.items() if n]
    if kept:
        warnings.warn(f"'{annotations}': {', '.join(kept)}.", stacklevel=3)


def check_segmentation(segmentation: Any, height: int, width: int, where: str) -> None:
    """A COCO ``segmentation`` is polygons (lists of x, y pairs, at least 3 points, within the image) or an RLE
    (``{"size": [height, width], "counts": ...}``) of the image's size; anything else is an error naming ``where``
    (the annotation id and file)."""
    if isinstance(segmentation, dict):
        if list(segmentation.get("size", [])) != [height, width] or "counts" not in segmentation:
            raise ValueError(
                f"Annotation id {where}: its RLE segmentation has size {segmentation.get('size')} but the image is "
                f"{height}x{width} (height x width); an RLE needs 'size': [{height}, {width}] and 'counts'."
            )
        return
    if not isinstance(segmentation, list) or not segmentation:
        raise ValueError(
            f"Annotation id {where} has no segmentation ({segmentation!r}); instance segmentation needs a mask per "
            "box: polygons [[x1, y1, x2, y2, ...], ...] or an RLE."
        )
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            raise ValueError(
                f"Annotation id {where} has a polygon {str(polygon)[:60]}; polygons are flat lists of at least three "
                "x, y pairs."
            )
        xs, ys = np.asarray(polygon[0::2], dtype=float), np.asarray(polygon[1::2], dtype=float)
        if xs.min() < -1 or ys.min() < -1 or xs.max() > width + 1 or ys.max() > height + 1:
            raise ValueError(
                f"Annotation id {where} has a polygon reaching ({xs.min():.0f}..{xs.max():.0f}, "
                f"{ys.min():.0f}..{ys.max():.0f}) outside its {width}x{height} image (width x height)."
            )


def decode_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The (height, width) uint8 0/1 mask of a checked COCO segmentation (pycocotools' decoding)."""
    from pycocotools import mask as mask_utils

    if callable(segmentation):  # a LabelMe / CVAT shape draws itself
        return np.asarray(segmentation(), dtype=np.uint8)
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"]}
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(np.uint8)


def check_mask_matches_box(mask: np.ndarray, box: np.ndarray, where: str) -> None:
    """A decoded mask must cover something and agree with its box (IoU of the mask's extent and the box >= 0.5)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        raise ValueError(f"Annotation id {where}: its segmentation covers no pixel. Fix or remove the annotation.")
    extent = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)
    inter = np.clip(np.minimum(extent[2:], box[2:]) - np.maximum(extent[:2], box[:2]), 0, None).prod()
    union = (extent[2:] - extent[:2]).prod() + (box[2:] - box[:2]).prod() - inter
    if inter / union < 0.5:
        raise ValueError(
            f"Annotation id {where}: its segmentation spans x {extent[0]:.0f}-{extent[2]:.0f}, y {extent[1]:.0f}-"
            f"{extent[3]:.0f} but its bbox is x {box[0]:.0f}-{box[2]:.0f}, y {box[1]:.0f}-{box[3]:.0f}: the mask and "
            "the box do not describe the same object."
        )


def match_image_ids(names: list[str], annotation_files: list[Path]) -> dict[str, int] | None:
    """``{image file name: COCO image id}`` from the first annotation file that lists every one of ``names`` (by
    file name, once each), or ``None``: predictions on a split's own images then carry that split's ids."""
    for path in annotation_files:
        ids: dict[str, list[int]] = {}
        for image in read_coco_json(path)["images"]:
            ids.setdefault(Path(str(image.get("file_name", ""))).name, []).append(image.get("id"))
        if all(len(ids.get(name, ())) == 1 for name in names):
            return {name: ids[name][0] for name in names}
    return None


def write_coco_results(
    lines: list[dict[str, Any]], output_dir: Path, categories: list[tuple[int, str]], image_ids: dict[str, int] | None
) -> tuple[Path, Path]:
    """Write predictions as COCO results: ``coco_results.json``, the list ``COCO.loadRes`` and evaluation servers
    take (``image_id``, ``category_id``, ``bbox`` as ``[x, y, w, h]``, ``score``, and ``segmentation`` RLE for
    masks), and ``coco_images.json`` (``images`` and ``categories``: the ids the results use).

    Args:
        lines: ``predictions.jsonl`` lines (``path``, ``height``, ``width``, ``boxes`` xyxy, ``scores``, ``labels``,
            optionally ``masks``).
        categories: ``(COCO category id, name)`` of each label.
        image_ids: image id of each file name (see ``match_image_ids``); ``None``: 1, 2, ... in path order.
    """
    lines = sorted(lines, key=lambda line: line["path"])
    if image_ids is None:
        image_ids = {Path(line["path"]).name: i for i, line in enumerate(lines, start=1)}
    results, images = [], []
    for line in lines:
        image_id = image_ids[Path(line["path"]).name]
        images.append({"id": image_id, "file_name": Path(line["path"]).name, "height": line["height"],
                       "width": line["width"]})  # fmt: skip
        masks = line.get("masks") or [None] * len(line["boxes"])
        for box, score, label, mask in zip(line["boxes"], line["scores"], line["labels"], masks, strict=True):
            x0, y0, x1, y1 = box
            bbox = [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]
            result = {"image_id": image_id, "category_id": categories[label][0], "bbox": bbox, "score": score}
            if mask is not None:
                result["segmentation"] = mask
            results.append(result)
    written = (output_dir / "coco_results.json", output_dir / "coco_images.json")
    written[0].write_text(json.dumps(results))
    listed = [{"id": cat_id, "name": name} for cat_id, name in categories]
    written[1].write_text(json.dumps({"images": images, "categories": listed}, indent=1))
    return written
