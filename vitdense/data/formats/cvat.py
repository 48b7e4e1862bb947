"""CVAT for images 1.1 XML -> class-id masks and shapes: task and project exports, drawn as CVAT's own mask export.

Layouts (as CVAT and datumaro's ``tests/assets/cvat_dataset`` write them):

- task export: ``annotations.xml`` beside ``images/`` (datumaro's assets name the XML ``<subset>.xml``: one ``.xml``
  whose root is ``<annotations>`` is taken);
- project export: each ``<image>`` names its ``subset`` and lies in ``images/<subset>/``; the subsets are the splits
  (``cvat_splits``: Train/Validation/Test, in any case, also train/val/valid/test).

Drawing follows CVAT's "Segmentation mask 1.1" export (cvat/apps/dataset_manager/formats/mask.py): ``background``
(colour 0,0,0) is class 0 unless a label has that name; polygons and boxes (a rotated box by its corners) through
pycocotools, masks from their RLE; by ``z_order``, then file order, a later one on top. Shapes that export leaves out
are skipped and counted (printed when the reader is built): polylines, points, ellipses, skeletons, cuboids, and shapes
with no label. A polyline or points shape with a numeric ``width`` attribute (``<attribute name="width">``) is drawn: a
line, or a disc per point, that many pixels wide.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image, ImageDraw

from vitdense.data.formats.class_table import ClassTable
from vitdense.data.formats.folders import IMAGE_EXTENSIONS, examples, list_files
from vitdense.data.formats.polygons import Labels, _points, _require_area

# CVAT subset names (any case) -> vitdense splits
SPLIT_OF_SUBSET = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip
SKIPPED = ("polyline", "points", "ellipse", "skeleton", "cuboid")  # CVAT's mask export draws none of them
BACKGROUND = "background"


def _root_tag(path: Path) -> str | None:
    try:
        _, element = next(ET.iterparse(path, events=("start",)))
    except (ET.ParseError, StopIteration, OSError):
        return None
    return element.tag


def find_cvat_xml(base: Path) -> Path | None:
    """The CVAT for images XML of ``base``: ``annotations.xml``, else the one ``*.xml`` whose root is
    ``<annotations>`` (as datumaro's ``<subset>.xml``); ``None`` if there is none."""
    if (base / "annotations.xml").is_file():
        return base / "annotations.xml"
    found = [p for p in sorted(base.glob("*.xml")) if _root_tag(p) == "annotations"] if base.is_dir() else []
    if len(found) > 1:
        raise ValueError(
            f"'{base}' holds {len(found)} CVAT XML files ({examples([p.name for p in found])}); keep one (CVAT "
            "exports one annotations.xml per task or project), or set data.annotations to the format you mean."
        )
    return found[0] if found else None


@lru_cache(maxsize=4)
def _parse_cached(path: Path, stamp: tuple[int, int]) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"'{path}' is not valid XML: {err}. Export 'CVAT for images 1.1' again.") from err


def parse_xml(path: Path) -> ET.Element:
    """The root of a CVAT XML (parsed once per file version: the splits, labels and readers all read it)."""
    if not path.is_file():
        raise FileNotFoundError(f"CVAT annotation file '{path}' not found.")
    stat = path.stat()
    root = _parse_cached(path, (stat.st_mtime_ns, stat.st_size))
    if root.find("image") is None and root.find("track") is not None:
        raise ValueError(
            f"'{path}' holds <track> elements and no <image>: it is a 'CVAT for video 1.1' export. Export the task "
            "as 'CVAT for images 1.1' (each frame an <image>), then point data.root at it."
        )
    return root


def cvat_labels(path: Path, background: bool = False) -> ClassTable | None:
    """The labels (with their colours) of a CVAT XML's ``meta``, in file order; ``background``: with CVAT's mask
    export's class 0 ``background`` (0, 0, 0) first, unless a label has that name."""
    root = parse_xml(path)
    names, colors = [], []
    for label in root.iterfind("./meta//labels/label"):
        names.append(label.findtext("name", "").strip())
        color = label.findtext("color", "").strip().lstrip("#")
        colors.append(tuple(int(color[i : i + 2], 16) for i in (0, 2, 4)) if len(color) == 6 else None)
    if not names:
        return None
    source = f"'{path}' labels"
    if background and BACKGROUND not in names:
        names, colors = [BACKGROUND, *names], [(0, 0, 0), *colors]
        source += " + 'background' (class 0, for pixels no shape covers, as CVAT's Segmentation mask export)"
    return ClassTable(names, colors if all(colors) else None, source=source)  # type: ignore[arg-type]


def _subset_of(image: ET.Element) -> str | None:
    subset = image.get("subset")
    return subset.strip() if subset and subset.strip() else None


def cvat_splits(path: Path) -> dict[str, tuple[str, ...]] | None:
    """The splits a project export names (``{split: its subsets}``), or ``None`` when the images name one subset or
    none (a task export): then the one-folder split applies.

    Raises:
        ValueError: A subset names no split, an image has no subset while others have, or there is no train or no
            validation subset (each message names the file and the subsets).
    """
    images = parse_xml(path).findall("image")
    subsets = list(dict.fromkeys(_subset_of(image) for image in images))
    if len(subsets) <= 1:
        return None
    if None in subsets:
        name = next(image.get("name") for image in images if _subset_of(image) is None)
        raise ValueError(
            f"'{path}' image '{name}' has no subset while others have {[s for s in subsets if s]}; give every task of "
            "the project a subset (Train, Validation, Test) in CVAT and export again."
        )
    unknown = [s for s in subsets if s.lower() not in SPLIT_OF_SUBSET]  # type: ignore[union-attr]
    if unknown:
        raise ValueError(
            f"'{path}' has the subset(s) {unknown}, which name no split (Train, Validation, Test, in any case; also "
            "train, val, valid, test). Rename those subsets in CVAT and export again."
        )
    splits: dict[str, tuple[str, ...]] = {}
    for subset in subsets:
        split = SPLIT_OF_SUBSET[subset.lower()]  # type: ignore[union-attr]
        splits[split] = (*splits.get(split, ()), subset)  # type: ignore[arg-type]
    for split, name in (("train", "Train"), ("val", "Validation")):
        if split not in splits:
            raise ValueError(
                f"'{path}' has the subsets {subsets} but no {name} subset; add a {name} subset to the CVAT project "
                "(or export a single subset, which is then split by val_fraction and seed)."
            )
    rank_zero_info(f"[vitdense] CVAT project export '{path}': subsets -> splits "
                   + ", ".join(f"{'+'.join(s)} -> {split}" for split, s in splits.items()))  # fmt: skip
    return splits


def _cvat_rle(rle: str, width: int, height: int, where: str) -> np.ndarray:
    """CVAT's mask RLE: run lengths alternating 0s and 1s (0s first), row by row over the mask's box."""
    try:
        runs = [int(v) for v in rle.split(",")]
    except ValueError:
        raise ValueError(f"{where}: rle {rle[:40]!r} is not comma-separated run lengths.") from None
    if sum(runs) != width * height or min(runs, default=0) < 0:
        raise ValueError(f"{where}: rle runs sum to {sum(runs)} but its box is {width}x{height}={width * height} px.")
    values = np.arange(len(runs)) % 2
    return np.repeat(values, runs).astype(bool).reshape(height, width)


def _width(el: ET.Element, where: str) -> float | None:
    """A shape's ``width`` attribute (drawn width of a polyline / points), if it has one."""
    text = next((a.text for a in el.iterfind("attribute") if a.get("name", "").strip().lower() == "width"), None)
    if text is None:
        return None
    try:
        width = float(text)
    except ValueError:
        width = math.nan
    if not math.isfinite(width) or width <= 0:
        raise ValueError(f"{where}: its width attribute {text!r} is not a positive number of pixels; fix or delete it.")
    return width


def _image_path(image_dir: Path, name: str, subset: str | None, where: str) -> Path:
    folders = ([image_dir / subset] if subset else []) + [image_dir]
    for folder in folders:
        for candidate in (folder / name, folder / Path(name).name):
            if candidate.is_file():
                return candidate
    looked = " or ".join(f"'{f}'" for f in folders)
    raise FileNotFoundError(f"{where} annotates the image '{name}', which is not in {looked}. Add the image (a project "
                            "export keeps it in images/<subset>/) or remove its annotations.")  # fmt: skip


class CvatReader:
    """CVAT for images 1.1 XML (task or project export) beside ``images/`` (``images/<subset>/`` per subset)."""

    def __init__(self, image_dir: Path, path: Path, labels: Labels, subsets: tuple[str, ...] | None = None) -> None:
        """Read and check the file; ``subsets``: keep only the images of these subsets (one split of a project)."""
        self.path, self.labels = path, labels
        self.skipped: Counter[str] = Counter()
        root = parse_xml(path)
        self.images: dict[Path, tuple[str, int, int, list[tuple[int, int, str, Any]]]] = {}
        listed: dict[Path, str] = {}
        for image in root.iterfind("image"):
            name, subset = image.get("name", ""), _subset_of(image)
            where = f"'{path}' image '{name}'" + (f" (subset {subset})" if subset else "")
            file = _image_path(image_dir, name, subset, where)
            if file in listed:
                raise ValueError(f"{where} is listed twice in the file ('{file}'); keep one entry per image.")
            listed[file] = name
            if subsets is not None and subset not in subsets:
                continue
            try:
                width, height = int(image.get("width", "")), int(image.get("height", ""))
            except ValueError:
                raise ValueError(f"{where} lacks width / height attributes.") from None
            shapes = [self._shape(el, n, f"{where} shape {n}", width, height) for n, el in enumerate(image)]
            self.images[file] = (name, width, height, [s for s in shapes if s is not None])
        if not listed:
            raise ValueError(f"'{path}' has no <image> elements; export 'CVAT for images 1.1' with annotations.")
        for folder in sorted({p.parent for p in listed}):
            missing = sorted(p.name for p in list_files(folder, IMAGE_EXTENSIONS) if p not in listed)
            if missing:
                raise ValueError(
                    f"{len(missing)} image(s) in '{folder}' have no entry in '{path}' (e.g. {examples(missing)}). "
                    "Annotate them (an image with no shapes is all background), or move them out of the folder."
                )
        part = f" (subsets {', '.join(subsets)})" if subsets else ""
        fill = labels.names[labels.fill] if 0 <= labels.fill < len(labels.names) else "ignore_index (void)"
        note = f"[vitdense] CVAT for images 1.1 '{path}'{part}: {len(self.images)} images; unlabelled pixels -> {fill}"
        if self.skipped:
            counts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.skipped.items()))
            note += (f"; skipped {counts} (CVAT's own mask export leaves them out; a polyline or points shape with a "
                     "numeric `width` attribute is drawn that wide)")  # fmt: skip
        self.note = note
        rank_zero_info(note)

    def _shape(self, el: ET.Element, n: int, where: str, width: int, height: int) -> tuple[int, int, str, Any] | None:
        where = f"{where} ({el.tag} {el.get('label')!r})"
        if el.tag == "tag":
            return None
        if el.tag not in ("polygon", "box", "mask", *SKIPPED):
            raise ValueError(f"{where}: {el.tag!r} is no CVAT for images 1.1 shape; export the task with CVAT again.")
        line_width = _width(el, where) if el.tag in ("polyline", "points") else None
        if el.tag in SKIPPED and line_width is None:
            self.skipped[el.tag] += 1
            return None
        if not el.get("label", "").strip():
            self.skipped["shape(s) with no label"] += 1
            return None
        cid = self.labels.id(el.get("label", ""), where)
        z = int(float(el.get("z_order", "0")))
        if el.tag == "mask":
            box = [int(float(el.get(k, "nan"))) for k in ("left", "top", "width", "height")]
            left, top, w, h = box
            if w <= 0 or h <= 0 or left < 0 or top < 0 or left + w > width or top + h > height:
                raise ValueError(f"{where}: its box {box} (left, top, width, height) is empty or leaves the image.")
            region = _cvat_rle(el.get("rle", ""), w, h, where)
            if not region.any():
                raise ValueError(f"{where} covers no pixel; delete it.")
            return (z, n, "mask", (cid, (left, top, w, h), region))
        if el.tag == "box":
            x0, y0, x1, y1 = (float(el.get(k, "nan")) for k in ("xtl", "ytl", "xbr", "ybr"))
            pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
            angle = math.radians(float(el.get("rotation", "0")))
            if angle:
                c, s, centre = math.cos(angle), math.sin(angle), pts.mean(axis=0)
                pts = (pts - centre) @ np.array([[c, s], [-s, c]]) + centre
        else:
            try:
                pts = np.array([[float(v) for v in p.split(",")] for p in el.get("points", "").split(";")])
            except ValueError:
                raise ValueError(f"{where}: points {el.get('points', '')[:60]!r} are not 'x,y;x,y;...'.") from None
        if el.tag in ("polyline", "points"):
            pts = _points(pts, where, 2 if el.tag == "polyline" else 1, width, height)
            return (z, n, el.tag, (cid, pts, line_width))
        pts = _points(pts, where, 3, width, height)
        _require_area(pts, where)
        return (z, n, "polygon", (cid, pts))

    def pairs(self) -> list[tuple[Path, Any]]:
        return sorted((path, path) for path in self.images)

    def size(self, key: Path) -> tuple[int, int]:
        return self.images[key][1], self.images[key][2]

    def describe(self, key: Path) -> str:
        return f"'{self.path}' image '{self.images[key][0]}'"

    def read(self, key: Path) -> np.ndarray:
        _, width, height, shapes = self.images[key]
        mask = np.full((height, width), self.labels.fill, np.int64)
        for _, _, kind, shape in sorted(shapes, key=lambda s: (s[0], s[1])):
            mask[draw_cvat(kind, shape, width, height)] = shape[0]
        return mask


def cvat_box(kind: str, shape: tuple[Any, ...]) -> np.ndarray:
    """The ``xyxy`` box of one checked CVAT shape: the extent of its points (a wide polyline's / points' grown by half
    its width), or of a mask's pixels."""
    if kind == "mask":
        _, (left, top, _, _), local = shape
        ys, xs = np.nonzero(local)
        return np.array([left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1], float)
    grow = shape[2] / 2 if kind in ("polyline", "points") else 0.0
    return np.concatenate([shape[1].min(axis=0) - grow, shape[1].max(axis=0) + grow])


def draw_cvat(kind: str, shape: tuple[Any, ...], width: int, height: int) -> np.ndarray:
    """The ``(H, W)`` bool region of one checked CVAT shape: a polygon (boxes are polygons too) through pycocotools,
    as CVAT's own mask export; a mask from its RLE placed at its box; a polyline of ``width`` pixels (Pillow's line,
    as labelme draws lines), or points as discs of that diameter."""
    if kind == "mask":
        _, (left, top, w, h), local = shape
        region = np.zeros((height, width), bool)
        region[top : top + h, left : left + w] = local
        return region
    if kind in ("polyline", "points"):
        canvas = Image.new("L", (width, height), 0)
        draw, pts, line_width = ImageDraw.Draw(canvas), shape[1], shape[2]
        if kind == "polyline":
            draw.line([tuple(p) for p in pts.tolist()], fill=1, width=max(1, round(line_width)))
        else:
            r = line_width / 2
            for x, y in pts.tolist():
                draw.ellipse([x - r, y - r, x + r, y + r], outline=1, fill=1)
        return np.asarray(canvas, bool)
    from pycocotools import mask as mask_utils

    rle = mask_utils.merge(mask_utils.frPyObjects([shape[1].reshape(-1).tolist()], height, width))
    return mask_utils.decode(rle).astype(bool)
