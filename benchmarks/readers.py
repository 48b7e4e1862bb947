"""Which library reads the annotation exports (#29 item 0): datumaro, the tools' own converters, vitdense's readers.

For each export with a real fixture (datumaro's MIT ``tests/assets``; labelme's ``examples/`` with labelme2voc's and
labelme2coco's committed outputs) the class masks, or instances per image, are read three ways and compared:

- the reference: the tool's own converter output where it is committed (labelme2voc ``SegmentationClassNpy``,
  labelme2coco ``annotations.json``), else the format's definition applied directly (VOC's colour map, CamVid's
  ``label_colors``, cityscapesScripts' labelId -> trainId table, pycocotools ``annToMask``, CVAT shapes rasterised
  with pycocotools as CVAT's mask export does, YOLO's txt lines);
- datumaro, installed in a separate venv (never a dependency of vitdense) and run in a subprocess of that venv;
- vitdense, in this process, through its DataModules pointed at the export as it is ("as exported"); where a small
  rearrangement (symlinks into ``images/``, a class list) lets vitdense read it, that is a second row ("arranged").

Also measured: import times (median of 3 fresh interpreters), datumaro's install size (its venv's site-packages minus
a bare venv's, and what ``pip install datumaro`` would add to vitdense's venv), and what each says about bad files.

    python benchmarks/readers.py                 # creates benchmarks/results/readers/venv on first use
    python benchmarks/readers.py --out /tmp/readers

Rows go to <out>/readers.json and <out>/readers.md. Fixtures are read from the fetched mirrors (bare git dirs); a
missing mirror skips its formats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATUMARO_MIRROR = Path("/work/.mirror/open-edge-platform+datumaro/repo")
LABELME_MIRROR = Path("/work/.mirror/wkentaro+labelme/repo")
VOID = 255
SPLITS2 = ("train", "val")  # the splits of datumaro's COCO assets
# CVAT project subsets -> vitdense split folders; masks of a project export are keyed "<split>/<stem>".
SUBSETS = {"train": "train", "validation": "val", "val": "val", "test": "test"}

# CamVid's published label_colors.txt (32 classes, as datumaro's CamvidLabelMap and the CamVid download list them).
# Typed here on purpose, not imported from vitdense.data.formats.camvid (CAMVID_LABEL_MAP): it is the reference
# that vitdense's reader is scored against, so a slip in either copy shows as a mismatch.
CAMVID = [
    ("Void", (0, 0, 0)), ("Animal", (64, 128, 64)), ("Archway", (192, 0, 128)), ("Bicyclist", (0, 128, 192)),
    ("Bridge", (0, 128, 64)), ("Building", (128, 0, 0)), ("Car", (64, 0, 128)), ("CartLuggagePram", (64, 0, 192)),
    ("Child", (192, 128, 64)), ("Column_Pole", (192, 192, 128)), ("Fence", (64, 64, 128)),
    ("LaneMkgsDriv", (128, 0, 192)), ("LaneMkgsNonDriv", (192, 0, 64)), ("Misc_Text", (128, 128, 64)),
    ("MotorcycycleScooter", (192, 0, 192)), ("OtherMoving", (128, 64, 64)), ("ParkingBlock", (64, 192, 128)),
    ("Pedestrian", (64, 64, 0)), ("Road", (128, 64, 128)), ("RoadShoulder", (128, 128, 192)),
    ("Sidewalk", (0, 0, 192)), ("SignSymbol", (192, 128, 128)), ("Sky", (128, 128, 128)),
    ("SUVPickupTruck", (64, 128, 192)), ("TrafficCone", (0, 0, 64)), ("TrafficLight", (0, 64, 64)),
    ("Train", (192, 64, 128)), ("Tree", (128, 128, 0)), ("Truck_Bus", (192, 128, 192)), ("Tunnel", (64, 0, 64)),
    ("VegetationMisc", (192, 192, 0)), ("Wall", (64, 192, 0)),
]  # fmt: skip
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip
# cityscapesScripts' labels.py: the 19 trainIds and the labelIds that map to them (every other labelId is void).
CITYSCAPES = [
    ("road", 7), ("sidewalk", 8), ("building", 11), ("wall", 12), ("fence", 13), ("pole", 17),
    ("traffic light", 19), ("traffic sign", 20), ("vegetation", 21), ("terrain", 22), ("sky", 23), ("person", 24),
    ("rider", 25), ("car", 26), ("truck", 27), ("bus", 28), ("train", 31), ("motorcycle", 32), ("bicycle", 33),
]  # fmt: skip


def norm(name: str) -> str:
    """Class names compared across readers by letters and digits, lower case (``traffic light`` = ``trafficlight``)."""
    return "".join(c for c in name.lower() if c.isalnum())


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:400] if text else ''}"


# ----------------------------------------------------------------------------------------------------------- datumaro
def datumaro_worker(cases_json: str, out_dir: str) -> None:
    """Run inside datumaro's venv (numpy + datumaro only): read each case, write masks (.npz) and a JSON summary."""
    import logging

    import datumaro as dm
    import numpy as np

    logged: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                logged.append(record.getMessage()[:300])

    logging.getLogger().addHandler(Keep())
    results: dict[str, Any] = {"version": dm.__version__}
    env = dm.Environment()
    for case in json.loads(Path(cases_json).read_text()):
        logged.clear()
        row: dict[str, Any] = {"detected": None}
        start = time.perf_counter()
        try:
            row["detected"] = env.detect_dataset(case["path"])
            ds = dm.Dataset.import_from(case["path"], case["datumaro"])
            if case["kind"] == "mask":
                ds = ds.transform("polygons_to_masks")
                if case.get("background"):  # CVAT's mask export draws boxes too
                    ds = ds.transform("boxes_to_masks")
            names = [label.name for label in ds.categories()[dm.AnnotationType.label]]
            # CVAT's Segmentation mask export: uncovered pixels are its "background" label (labelmap.txt's first line)
            fill = len(names) if case.get("background") else VOID
            if case.get("background"):
                names.append("background")
            masks, counts = {}, {}
            for item in ds:
                key = item.id.split("/")[-1]
                if case.get("by_subset"):
                    key = f"{SUBSETS.get(item.subset.lower(), item.subset.lower())}/{key}"
                if case["kind"] == "count":
                    kinds = {dm.AnnotationType.bbox, dm.AnnotationType.polygon, dm.AnnotationType.mask}
                    anns = [a for a in item.annotations if a.type in kinds]
                    counts[key] = len({a.group or -(i + 1) for i, a in enumerate(anns)})
                    continue
                height, width = item.media.size
                mask = np.full((height, width), fill, np.int64)
                anns = [(i, a) for i, a in enumerate(item.annotations) if a.type == dm.AnnotationType.mask]
                if case["order"] == "area":  # COCO: larger first, smaller on top; crowd regions last, void
                    anns.sort(key=lambda p: (bool(p[1].attributes.get("is_crowd")), -int(p[1].image.sum()), p[0]))
                else:  # CVAT / semantic masks: by z_order, then file order, a later one on top
                    anns.sort(key=lambda p: (p[1].z_order, p[0]))
                for _, a in [p for p in anns if p[1].label is not None]:  # unlabelled shapes: left out, as above
                    crowd = case["order"] == "area" and a.attributes.get("is_crowd")
                    mask[a.image.astype(bool)] = VOID if crowd else a.label
                masks[key] = mask
            row.update(names=names, items=len(ds), seconds=round(time.perf_counter() - start, 3))
            if masks:
                np.savez_compressed(Path(out_dir) / f"{case['name']}.npz", **masks)
            if counts:
                row["counts"] = counts
        except Exception as err:  # every failure is a result here
            row["error"] = first_line(err)
        row["logged"] = list(logged[:5])
        results[case["name"]] = row
    (Path(out_dir) / "datumaro.json").write_text(json.dumps(results, indent=1))


# --------------------------------------------------------------------------------------------------------- fixtures
def extract(mirror: Path, paths: list[str], dest: Path) -> bool:
    """``git archive`` of ``paths`` of a bare mirror into ``dest``; False when the mirror is absent."""
    if not mirror.is_dir():
        return False
    archive = subprocess.run(["git", "-C", str(mirror), "archive", "HEAD", *paths], capture_output=True, check=True)
    subprocess.run(["tar", "x", "-C", str(dest)], input=archive.stdout, check=True)
    return True


def mirror_commit(mirror: Path) -> str | None:
    if not mirror.is_dir():
        return None
    return subprocess.run(
        ["git", "-C", str(mirror), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


def link_tree(pairs: dict[str, Path], dest: Path) -> Path:
    """A folder of symlinks ``dest/<name> -> path`` (the "arranged" layouts; nothing is copied)."""
    for name, target in pairs.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).symlink_to(target.resolve(), target_is_directory=target.is_dir())
    return dest


# -------------------------------------------------------------------------------------------------------- reference
def ref_color_masks(files: dict[str, Path], table: list[tuple[str, tuple[int, int, int]]], void: set[str]):
    """Colour masks (RGB or palette) through a colour table -> class ids in table order; unknown colours -> -1."""
    import numpy as np
    from PIL import Image

    names = [n for n, _ in table if n not in void]
    out = {}
    for key, path in files.items():
        rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        mask = np.full(code.shape, -1, np.int64)
        for name, (r, g, b) in table:
            mask[code == (r << 16 | g << 8 | b)] = VOID if name in void else names.index(name)
        out[key] = mask
    return names, out


def voc_colormap() -> list[tuple[int, int, int]]:
    """Pascal VOC's bit-interleaved colour map (VOCdevkit's ``VOClabelcolormap.m``)."""
    cmap = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap.append((r, g, b))
    return cmap


def ref_voc(root: Path):
    import numpy as np
    from PIL import Image

    cmap = voc_colormap()
    table = [*zip(VOC_CLASSES, cmap), ("void", cmap[255])]
    files = {p.stem: p for p in sorted((root / "SegmentationClass").glob("*.png"))}
    palette = {k: p for k, p in files.items() if Image.open(p).mode == "P"}
    names, out = ref_color_masks({k: p for k, p in files.items() if k not in palette}, table, {"void"})
    out.update({k: np.asarray(Image.open(p)).astype(np.int64) for k, p in palette.items()})  # the indices as stored
    return names, out


def ref_cityscapes(root: Path):
    """instanceIds (labelId, or labelId * 1000 + instance) -> cityscapesScripts' 19 trainIds; the rest void."""
    import numpy as np
    from PIL import Image

    lut = np.full(40, VOID, np.int64)
    for train_id, (_, label_id) in enumerate(CITYSCAPES):
        lut[label_id] = train_id
    out = {}
    for path in sorted((root / "gtFine").rglob("*_gtFine_instanceIds.png")):
        ids = np.asarray(Image.open(path)).astype(np.int64)
        ids = np.where(ids >= 1000, ids // 1000, ids)
        out[path.name.replace("_gtFine_instanceIds.png", "")] = lut[ids]
    return [n for n, _ in CITYSCAPES], out


def ref_coco(json_path: Path):
    """pycocotools ``annToMask`` per annotation; larger first (a smaller one on top), crowd regions last as void."""
    import numpy as np
    from pycocotools.coco import COCO

    coco = COCO(str(json_path))
    cats = sorted(coco.cats)
    names, out = [coco.cats[c]["name"] for c in cats], {}
    for img_id, img in coco.imgs.items():
        mask = np.full((img["height"], img["width"]), VOID, np.int64)
        anns = [a for a in coco.imgToAnns[img_id] if a.get("segmentation")]
        drawn = [(bool(a.get("iscrowd")), coco.annToMask(a).astype(bool), a) for a in anns]
        for crowd, m, a in sorted(drawn, key=lambda d: (d[0], -int(d[1].sum()))):
            mask[m] = VOID if crowd else cats.index(a["category_id"])
        out[Path(img["file_name"]).stem] = mask
    return names, out


def ref_cvat(xml_path: Path, by_subset: bool = False):
    """CVAT for images 1.1 as CVAT's mask export draws it: polygons and boxes (pycocotools), by z_order then file
    order, later on top; polylines and points are skipped; uncovered pixels are "background" (its labelmap.txt)."""
    import xml.etree.ElementTree as ET

    import numpy as np
    from pycocotools import mask as mask_utils

    root = ET.parse(xml_path).getroot()
    names = [lab.findtext("name") for lab in root.iter("label")]
    names = [*dict.fromkeys(n for n in names if n), "background"]
    out = {}
    for image in root.iter("image"):
        h, w = int(image.get("height")), int(image.get("width"))
        mask = np.full((h, w), len(names) - 1, np.int64)
        shapes = []
        for i, s in enumerate(image):
            if s.tag == "polygon":
                pts = [float(v) for p in s.get("points").split(";") for v in p.split(",")]
            elif s.tag == "box":
                x0, y0, x1, y1 = (float(s.get(k)) for k in ("xtl", "ytl", "xbr", "ybr"))
                pts = [x0, y0, x1, y0, x1, y1, x0, y1]
            else:
                continue
            if s.get("label") in names:  # a shape with no label has no class: CVAT's mask export leaves it out
                shapes.append((int(s.get("z_order", 0)), i, s.get("label"), pts))
        for _, _, label, pts in sorted(shapes, key=lambda t: t[:2]):
            m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([pts], h, w))).astype(bool)
            mask[m] = names.index(label)
        key = Path(image.get("name")).stem
        out[f"{SUBSETS[image.get('subset', '').lower()]}/{key}" if by_subset else key] = mask
    return names, out


def ref_labelme_voc(voc: Path, labels_txt: Path):
    """labelme2voc's committed ``SegmentationClassNpy`` (-1 = ``__ignore__`` -> void), class names from labels.txt."""
    import numpy as np

    names = [n.strip() for n in labels_txt.read_text().splitlines() if n.strip()][1:]  # drops __ignore__ (id -1)
    out = {}
    for path in sorted((voc / "SegmentationClassNpy").glob("*.npy")):
        ids = np.load(path).astype(np.int64)
        out[path.stem] = np.where(ids < 0, VOID, ids)
    return names, out


def ref_coco_counts(json_path: Path) -> dict[str, int]:
    data = json.loads(json_path.read_text())
    per = {img["id"]: 0 for img in data["images"]}
    for ann in data["annotations"]:
        per[ann["image_id"]] += 1
    return {Path(img["file_name"]).stem: per[img["id"]] for img in data["images"]}


def ref_yolo_counts(folder: Path) -> dict[str, int]:
    return {p.stem: sum(1 for line in p.read_text().splitlines() if line.strip()) for p in folder.glob("*.txt")}


# --------------------------------------------------------------------------------------------------------- vitdense
def vitdense_masks(build, by_subset: bool = False) -> tuple[list[str], dict[str, Any]]:
    """Every split's masks of a vitdense segmentation DataModule, by image stem."""
    dm = build()
    out = {}
    for split in ("train", "val", "test"):
        try:
            dataset = dm.dataset(split)
        except (FileNotFoundError, ValueError):
            if split == "train":
                raise
            continue  # no such split: its images are reported missing if the reference has them
        for image, key in dataset.samples:
            stem = Path(image).stem.removesuffix("_leftImg8bit")  # Cityscapes images are keyed without it
            out[f"{split}/{stem}" if by_subset else stem] = dataset.load_mask(key)
    return list(dm.class_names), out


def vitdense_counts(build) -> dict[str, int]:
    dm = build()
    out = {}
    for split in ("train", "val", "test"):
        try:
            dataset = dm.dataset(split)
        except (FileNotFoundError, ValueError):
            if split == "train":
                raise
            continue
        for record in dataset.records:
            out[Path(record.path).stem] = len(record.labels)
    return out


# ---------------------------------------------------------------------------------------------------------- compare
def agreement(
    ref: tuple[list[str], dict[str, Any]], got: tuple[list[str], dict[str, Any]], others_void: bool = False
) -> dict[str, Any]:
    """Share of the reference's pixels where ``got`` gives the same class (names matched across readers) or void;
    ``others_void``: a class the reference does not have is void (Cityscapes' labelIds outside the 19 trainIds)."""
    import numpy as np

    ref_names, ref_masks = ref
    names, masks = got
    index = {norm(n): i for i, n in enumerate(ref_names)}
    lut = {i: index.get(norm(n), VOID if others_void else -2) for i, n in enumerate(names)} | {VOID: VOID}
    same = total = 0
    missing = sorted(set(ref_masks) - set(masks))
    for key, r in ref_masks.items():
        total += r.size
        if key not in masks:
            continue
        g = masks[key]
        if g.shape != r.shape:
            continue
        mapped = np.vectorize(lambda v: lut.get(int(v), -2), otypes=[np.int64])(g) if g.size else g
        same += int((mapped == r).sum())
    return {"agreement": round(same / total, 6) if total else None, "images": len(ref_masks),
            "missing": missing[:5], "pixels": total}  # fmt: skip


def count_agreement(ref: dict[str, int], got: dict[str, int]) -> dict[str, Any]:
    equal = sum(1 for k, v in ref.items() if got.get(k) == v)
    diff = {k: [v, got.get(k)] for k, v in ref.items() if got.get(k) != v}
    return {"agreement": round(equal / len(ref), 6) if ref else None, "images": len(ref), "differ": diff}


# ------------------------------------------------------------------------------------------------------------ cases
def cases(fx: Path, work: Path) -> list[dict[str, Any]]:
    """The formats measured: fixture path, reference, datumaro format, vitdense attempts."""
    import xml.etree.ElementTree as ET

    from vitdense.data import CocoInstanceDataModule, SegmentationFolderDataModule
    from vitdense.data.datamodules.benchmarks import CityscapesDataModule, VOCSegmentationDataModule

    a, ex = fx / "tests" / "assets", fx / "examples"
    seg = dict(crop_size=8)
    out: list[dict[str, Any]] = []
    if (a / "voc_dataset").is_dir():
        voc = a / "voc_dataset" / "voc_dataset1"
        arranged = link_tree({"images": voc / "JPEGImages", "masks": voc / "SegmentationClass"}, work / "voc_arranged")
        cmap = voc_colormap()
        lines = [f"{i} {n} {','.join(map(str, cmap[i]))}" for i, n in enumerate(VOC_CLASSES)]
        (arranged / "classes.txt").write_text("\n".join([*lines, f"255 void {','.join(map(str, cmap[255]))}"]) + "\n")
        out.append(dict(
            name="voc", title="Pascal VOC segmentation (datumaro voc_dataset1)", kind="mask", path=str(voc),
            datumaro="voc_segmentation", order="z", reference=lambda: ref_voc(voc),
            reference_source="VOC colour map (VOClabelcolormap) of SegmentationClass/*.png",
            vitdense={
                "as exported (SegmentationFolderDataModule)": lambda p=voc: SegmentationFolderDataModule(str(p), **seg),
                "as exported (VOCSegmentationDataModule)": lambda p=voc: VOCSegmentationDataModule(str(p), **seg),
                "arranged (images/, masks/, classes.txt of VOC colours)":
                    lambda p=arranged: SegmentationFolderDataModule(str(p), val_fraction=0.5, **seg),
            },
        ))  # fmt: skip
    if (a / "cvat_dataset").is_dir():
        for sub, xml in (("export_task", "train.xml"), ("export_project", "annotations.xml")):
            src = a / "cvat_dataset" / "for_images" / sub
            arranged, project = work / f"cvat_{sub}_arranged", sub == "export_project"
            if project:  # CVAT writes images/<Subset>/ and one XML: vitdense wants <split>/images + its XML
                tree = ET.parse(src / xml)
                for subset in {im.get("subset") for im in tree.getroot().iter("image")}:
                    split = arranged / SUBSETS[subset.lower()]
                    link_tree({"images": src / "images" / subset}, split)
                    part = ET.parse(src / xml)
                    for im in [im for im in part.getroot().findall("image") if im.get("subset") != subset]:
                        part.getroot().remove(im)
                    part.write(split / "annotations.xml")
            else:
                link_tree({"images": src / "images", "annotations.xml": src / xml}, arranged)
            out.append(dict(
                name=f"cvat_{sub}", title=f"CVAT for images 1.1, {sub.replace('_', ' ')}", kind="mask", path=str(src),
                datumaro="cvat", order="z", reference=lambda p=src / xml, b=project: ref_cvat(p, b), by_subset=project,
                background=True,
                reference_source="XML polygons + boxes rasterised by pycocotools, z_order (CVAT's mask export)",
                vitdense={
                    "as exported": lambda p=src: SegmentationFolderDataModule(str(p), **seg),
                    "arranged (<split>/images + <split>/annotations.xml)" if project else "arranged (annotations.xml)":
                        lambda p=arranged: SegmentationFolderDataModule(str(p), val_fraction=0.5, **seg),
                },
            ))  # fmt: skip
    if (a / "camvid_dataset").is_dir():
        cam = a / "camvid_dataset"
        files = {p.stem: p for p in sorted(cam.glob("*annot/*.png"))}
        arranged = work / "camvid_arranged"
        for split in ("train", "val", "test"):
            link_tree({f"{split}/images": cam / split, f"{split}/masks": cam / f"{split}annot"}, arranged)
        (arranged / "classes.txt").write_text(
            "\n".join(f"{i} {n} {','.join(map(str, c))}" for i, (n, c) in enumerate(CAMVID)) + "\n"
        )
        out.append(dict(
            name="camvid", title="CamVid (datumaro camvid_dataset, SegNet layout)", kind="mask", path=str(cam),
            datumaro="camvid", order="z", reference=lambda: ref_color_masks(files, CAMVID, set()),
            reference_source="CamVid label_colors (32 classes) of *annot/*.png",
            vitdense={
                "as exported": lambda p=cam: SegmentationFolderDataModule(str(p), **seg),
                "arranged (split/images, split/masks, classes.txt of CamVid colours)":
                    lambda p=arranged: SegmentationFolderDataModule(str(p), **seg),
            },
        ))  # fmt: skip
    if (a / "cityscapes_dataset").is_dir():
        city = a / "cityscapes_dataset" / "dataset"
        out.append(dict(
            name="cityscapes", title="Cityscapes gtFine (datumaro cityscapes_dataset, instanceIds only)",
            kind="mask", path=str(city), datumaro="cityscapes", order="z", reference=lambda: ref_cityscapes(city),
            others_void=True,
            reference_source="instanceIds -> labelId -> trainId (cityscapesScripts labels.py)",
            vitdense={"as exported (CityscapesDataModule)": lambda: CityscapesDataModule(str(city), **seg)},
        ))  # fmt: skip
    if (a / "coco_dataset").is_dir():
        coco = a / "coco_dataset" / "coco_instances"
        arranged = work / "coco_arranged"
        for split in ("train", "val"):
            link_tree({f"{split}/images": coco / "images" / split,
                       f"{split}/annotations.json": coco / "annotations" / f"instances_{split}.json"},
                      arranged)  # fmt: skip
        out.append(dict(
            name="coco", title="COCO instances (datumaro coco_instances), semantic masks", kind="mask", path=str(coco),
            datumaro="coco_instances", order="area",
            reference=lambda: merge_refs([ref_coco(coco / f"annotations/instances_{s}.json") for s in SPLITS2]),
            reference_source="pycocotools annToMask, larger first, crowd last as void",
            vitdense={
                "as exported": lambda p=coco: SegmentationFolderDataModule(str(p), **seg),
                "arranged (split/images, split/annotations.json)":
                    lambda p=arranged: SegmentationFolderDataModule(str(p), **seg),
            },
        ))  # fmt: skip
    if (a / "yolo_dataset").is_dir():
        yolo = a / "yolo_dataset" / "strict"
        out.append(dict(
            name="yolo", title="YOLO (Darknet, datumaro yolo_dataset/strict), boxes per image", kind="count",
            path=str(yolo), datumaro="yolo", reference=lambda: ref_yolo_counts(yolo / "obj_train_data"),
            reference_source="lines of obj_train_data/*.txt",
            vitdense={"as exported (CocoInstanceDataModule)": lambda: CocoInstanceDataModule(str(yolo))},
        ))  # fmt: skip
    if (ex / "semantic_segmentation").is_dir():
        for example in ("semantic_segmentation", "instance_segmentation"):
            src = ex / example
            arranged = link_tree({"images": src / "data_annotated"}, work / f"labelme_{example}")
            names = [n.strip() for n in (src / "labels.txt").read_text().splitlines() if n.strip()][1:]
            (work / f"labelme_{example}_labels").mkdir()
            shifted = link_tree({"images": src / "data_annotated", "classes.txt": src / "labels.txt"},
                                work / f"labelme_{example}_labels")  # fmt: skip
            out.append(dict(
                name=f"labelme_{example.split('_')[0]}", title=f"LabelMe JSON (labelme examples/{example})",
                kind="mask", path=str(src), datumaro="label_me", order="z",
                reference=lambda s=src: ref_labelme_voc(s / "data_dataset_voc", s / "labels.txt"),
                reference_source="labelme2voc's committed SegmentationClassNpy",
                vitdense={
                    "as exported": lambda s=src: SegmentationFolderDataModule(str(s), **seg),
                    "arranged, labels.txt given as classes.txt":
                        lambda p=shifted: SegmentationFolderDataModule(str(p), val_fraction=0.34, **seg),
                    "arranged, class_names = labels.txt without __ignore__, background _background_":
                        lambda p=arranged, n=names: SegmentationFolderDataModule(
                            str(p), class_names=n, polygons={"background": "_background_"}, val_fraction=0.34, **seg),
                },
            ))  # fmt: skip
        inst = ex / "instance_segmentation"
        arranged = work / "labelme_instance_segmentation"
        names = [n.strip() for n in (inst / "labels.txt").read_text().splitlines() if n.strip()][2:]
        out.append(dict(
            name="labelme_instances", title="LabelMe JSON instances (examples/instance_segmentation)", kind="count",
            path=str(inst), datumaro="label_me",
            reference=lambda: ref_coco_counts(inst / "data_dataset_coco" / "annotations.json"),
            reference_source="labelme2coco's committed annotations.json",
            vitdense={
                "as exported": lambda: CocoInstanceDataModule(str(inst)),
                "arranged (images/ with the JSON), class_names from labels.txt":
                    lambda p=arranged, n=names: CocoInstanceDataModule(str(p), class_names=n, val_fraction=0.34),
            },
        ))  # fmt: skip
    return out


def merge_refs(refs: list[tuple[list[str], dict[str, Any]]]) -> tuple[list[str], dict[str, Any]]:
    names, masks = refs[0][0], {}
    for _, m in refs:
        masks.update(m)
    return names, masks


# ------------------------------------------------------------------------------------------------------ bad inputs
def bad_inputs(fx: Path, work: Path) -> list[dict[str, Any]]:
    """Broken copies of the fixtures, each read by datumaro and by vitdense (an arranged layout vitdense reads)."""
    from vitdense.data import SegmentationFolderDataModule

    a = fx / "tests" / "assets"
    rows: list[dict[str, Any]] = []
    if not (a / "cvat_dataset").is_dir():
        return rows
    src = a / "cvat_dataset" / "for_images" / "export_task"
    xml = (src / "train.xml").read_text()

    def cvat_case(name: str, text: str, what: str) -> None:
        folder = work / "bad" / name
        (folder / "images").mkdir(parents=True)
        for img in (src / "images").glob("*.jpg"):
            shutil.copy(img, folder / "images" / img.name)
        (folder / "annotations.xml").write_text(text)
        rows.append(
            dict(
                name=name,
                what=what,
                path=str(folder),
                datumaro="cvat",
                kind="mask",
                order="z",
                background=True,
                vitdense=lambda p=folder: SegmentationFolderDataModule(str(p), val_fraction=0.5, crop_size=8),
            )
        )

    cvat_case("cvat_truncated_xml", xml[: len(xml) // 2], "annotations.xml cut in half")
    cvat_case("cvat_unknown_label", xml.replace('label="label1"', 'label="nolabel"', 1),
              "a shape's label is not among the task's labels")  # fmt: skip
    cvat_case("cvat_bad_points", xml.replace('points="', 'points="abc;', 1), "unlabelled polyline, points 'abc;...'")
    coco = a / "coco_dataset" / "coco_instances"
    data = json.loads((coco / "annotations" / "instances_val.json").read_text())

    def coco_case(name: str, doc: dict[str, Any], what: str) -> None:
        folder = work / "bad" / name
        (folder / "annotations").mkdir(parents=True)
        (folder / "images" / "val").mkdir(parents=True)
        for img in (coco / "images" / "val").glob("*.jpg"):
            shutil.copy(img, folder / "images" / "val" / img.name)
        (folder / "annotations" / "instances_val.json").write_text(json.dumps(doc))
        arranged = link_tree({"images": folder / "images" / "val",
                              "annotations.json": folder / "annotations" / "instances_val.json"},
                             work / "bad" / f"{name}_arranged")  # fmt: skip
        rows.append(dict(name=name, what=what, path=str(folder), datumaro="coco_instances", kind="mask", order="area",
                         vitdense=lambda p=arranged: SegmentationFolderDataModule(str(p), val_fraction=0.0,
                                                                                  crop_size=8)))  # fmt: skip

    bad = json.loads(json.dumps(data))
    bad["annotations"][0]["category_id"] = 99
    coco_case("coco_unknown_category", bad, "an annotation's category_id 99 is in no category")
    bad = json.loads(json.dumps(data))
    polys = [a for a in bad["annotations"] if isinstance(a.get("segmentation"), list) and a["segmentation"]]
    if polys:
        polys[0]["segmentation"] = [[1.0, 1.0, 2.0]]
    coco_case("coco_short_polygon", bad, "a polygon of 1.5 points")
    bad = json.loads(json.dumps(data))
    polys = [a for a in bad["annotations"] if isinstance(a.get("segmentation"), list) and a["segmentation"]]
    if polys:
        polys[0]["segmentation"] = [[v + 500 for v in polys[0]["segmentation"][0]]]
    coco_case("coco_polygon_outside", bad, "a polygon 500 px outside its image")
    voc = a / "voc_dataset" / "voc_dataset1"
    folder = work / "bad" / "voc_unknown_colour"
    shutil.copytree(voc, folder)
    from PIL import Image

    mask_path = next((folder / "SegmentationClass").glob("*.png"))
    img = Image.open(mask_path).convert("RGB")
    img.putpixel((0, 0), (1, 2, 3))
    img.save(mask_path)
    cmap = voc_colormap()
    arranged = link_tree({"images": folder / "JPEGImages", "masks": folder / "SegmentationClass"},
                         work / "bad" / "voc_unknown_colour_arranged")  # fmt: skip
    lines = [f"{i} {n} {','.join(map(str, cmap[i]))}" for i, n in enumerate(VOC_CLASSES)]
    (arranged / "classes.txt").write_text("\n".join(lines) + "\n")
    rows.append(
        dict(
            name="voc_unknown_colour",
            what="a mask pixel of colour (1,2,3), in no class",
            path=str(folder),
            datumaro="voc_segmentation",
            kind="mask",
            order="z",
            vitdense=lambda p=arranged: SegmentationFolderDataModule(str(p), val_fraction=0.5, crop_size=8),
        )
    )
    return rows


# -------------------------------------------------------------------------------------------------------- measures
def ensure_venv(venv: Path) -> Path:
    """The separate datumaro venv (created with ``pip install datumaro`` on first use); returns its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "datumaro"], check=True)
    return python


def site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip())


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def install_size(python: Path) -> dict[str, Any]:
    """Datumaro's site-packages minus a bare venv's; and what ``pip install datumaro`` would add to vitdense's venv
    (a dry run), sized by the installed files of those distributions in datumaro's venv."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "venv", tmp], check=True)
        bare = du(site_packages(Path(tmp) / "bin" / "python"))
    site = site_packages(python)
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-", "datumaro"],
        capture_output=True, text=True,
    )  # fmt: skip
    added = []
    if report.returncode == 0 and report.stdout.strip():
        added = [i["metadata"]["name"] for i in json.loads(report.stdout)["install"]]
    sizes = {}
    for dist in site.glob("*.dist-info"):
        name = dist.name.rsplit("-", 1)[0].split("-")[0]
        record = dist / "RECORD"
        total = 0
        if record.exists():
            for line in record.read_text().splitlines():
                parts = line.rsplit(",", 2)
                if len(parts) == 3 and parts[2].isdigit():
                    total += int(parts[2])
        sizes[norm(name)] = total
    extra = sum(sizes.get(norm(n), 0) for n in added)
    return {"venv_delta_bytes": du(site) - bare, "added_to_vitdense": added, "added_to_vitdense_bytes": extra,
            "dry_run_error": report.stderr.strip()[-300:] if report.returncode else None}  # fmt: skip


def import_time(python: Path, code: str, runs: int = 3) -> float:
    """Median wall time of a fresh interpreter running ``code`` minus one running ``pass`` (seconds)."""

    def once(src: str) -> float:
        start = time.perf_counter()
        subprocess.run([str(python), "-c", src], check=True, capture_output=True)
        return time.perf_counter() - start

    base = statistics.median(once("pass") for _ in range(runs))
    return round(statistics.median(once(code) for _ in range(runs)) - base, 3)


# ---------------------------------------------------------------------------------------------------------- report
def vitdense_row(case: dict[str, Any], label: str, build, ref) -> dict[str, Any]:
    import warnings

    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if case["kind"] == "mask":
                got = vitdense_masks(build, case.get("by_subset", False))
                row = agreement(ref, got, case.get("others_void", False))
            else:
                row = count_agreement(ref, vitdense_counts(build))
    except Exception as err:  # refused: the error is the result
        return {"reader": f"vitdense {label}", "refused": first_line(err)}
    return {"reader": f"vitdense {label}", **row, "seconds": round(time.perf_counter() - start, 3)}


def datumaro_row(case: dict[str, Any], result: dict[str, Any], out_dir: Path, ref) -> dict[str, Any]:
    import numpy as np

    row: dict[str, Any] = {"reader": f"datumaro {case['datumaro']}", "detected": result.get("detected")}
    if "error" in result:
        return {**row, "refused": result["error"], "logged": result.get("logged")}
    if case["kind"] == "mask":
        npz = out_dir / f"{case['name']}.npz"
        masks = dict(np.load(npz)) if npz.exists() else {}
        row.update(agreement(ref, (result["names"], masks), case.get("others_void", False)))
    else:
        row.update(count_agreement(ref, result.get("counts", {})))
    return {**row, "seconds": result.get("seconds"), "logged": result.get("logged")}


def write_md(path: Path, report: dict[str, Any]) -> None:
    m = report["measures"]
    lines = [
        "# Reading annotation exports: datumaro vs the tools' converters vs vitdense",
        "",
        f"`python benchmarks/readers.py` on {report['machine']}; datumaro {report['datumaro_version']} in its venv; "
        f"fixtures: datumaro `tests/assets` @ {str(report['fixtures'].get('datumaro'))[:12]}, labelme `examples/` @ "
        f"{str(report['fixtures'].get('labelme'))[:12]}. Agreement: share of the reference's pixels given the same "
        "class (or void), or share of images with the same number of instances. 'refused': the reader raised.",
        "",
        "| cost | datumaro | vitdense |",
        "| --- | --- | --- |",
        f"| import (median of 3 fresh interpreters, minus `pass`) | `import datumaro`: {m['datumaro_import_s']} s; "
        f"+ `Dataset.import_from` of one VOC dataset: {m['datumaro_first_read_s']} s | "
        f"`import vitdense.data.formats.masks`: {m['vitdense_reader_import_s']} s; `import vitdense.data`: "
        f"{m['vitdense_data_import_s']} s |",
        f"| install | venv site-packages delta {m['install']['venv_delta_bytes'] / 2**20:.0f} MiB; into vitdense's "
        f"venv it adds {len(m['install']['added_to_vitdense'])} distributions, "
        f"{m['install']['added_to_vitdense_bytes'] / 2**20:.0f} MiB: {', '.join(m['install']['added_to_vitdense'])} "
        "| (already installed) |",
        "",
    ]
    for case in report["cases"]:
        lines += [f"## {case['title']}", "", f"Reference: {case['reference_source']}.", "",
                  "| reader | agreement | images | note |", "| --- | --- | --- | --- |"]  # fmt: skip
        for row in case["rows"]:
            note = row.get("refused") or ""
            if row.get("differ"):
                note = f"differ (reference, got): {json.dumps(row['differ'])[:200]}"
            if row.get("missing"):
                note += f" missing: {row['missing']}"
            if row.get("detected") is not None and not row.get("detected"):
                note = f"format not detected; {note}"
            note = note.replace("|", "\\|").replace("\n", " ")
            agree = "refused" if "refused" in row else f"{row.get('agreement', 0):.4f}" if row.get(
                "agreement") is not None else "-"  # fmt: skip
            lines.append(f"| {row['reader']} | {agree} | {row.get('images', '')} | {note[:400]} |")
        lines.append("")
    lines += ["## Bad inputs: what each says", "", "| input | datumaro | vitdense |", "| --- | --- | --- |"]
    for row in report["bad_inputs"]:
        cells = [str(row[k]).replace("|", "\\|").replace("\n", " ")[:300] for k in ("datumaro", "vitdense")]
        lines.append(f"| {row['what']} (`{row['name']}`) | {cells[0]} | {cells[1]} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "readers")
    parser.add_argument("--venv", type=Path, default=REPO / "benchmarks" / "results" / "readers" / "venv")
    parser.add_argument("--datumaro-worker", nargs=2, metavar=("CASES_JSON", "OUT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.datumaro_worker:
        datumaro_worker(*args.datumaro_worker)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    python = ensure_venv(args.venv)
    with tempfile.TemporaryDirectory(prefix="readers-") as tmp:
        fx, work, dm_out = Path(tmp) / "fixtures", Path(tmp) / "work", Path(tmp) / "datumaro"
        for d in (fx, work, dm_out):
            d.mkdir()
        assets = ["voc_dataset", "cvat_dataset", "camvid_dataset", "cityscapes_dataset", "coco_dataset", "yolo_dataset"]
        extract(DATUMARO_MIRROR, [f"tests/assets/{x}" for x in assets], fx)
        extract(LABELME_MIRROR, ["examples/semantic_segmentation", "examples/instance_segmentation"], fx)
        all_cases, bad = cases(fx, work), bad_inputs(fx, work)
        keys = ("name", "path", "datumaro", "kind", "by_subset", "background")
        spec = [{k: c[k] for k in keys if k in c} | {"order": c.get("order", "z")}
                for c in [*all_cases, *bad]]  # fmt: skip
        (Path(tmp) / "cases.json").write_text(json.dumps(spec))
        subprocess.run([str(python), __file__, "--datumaro-worker", str(Path(tmp) / "cases.json"), str(dm_out)],
                       check=True, capture_output=True)  # fmt: skip
        dm_results = json.loads((dm_out / "datumaro.json").read_text())
        report_cases = []
        for case in all_cases:
            ref = case["reference"]()
            rows = [datumaro_row(case, dm_results[case["name"]], dm_out, ref)]
            rows += [vitdense_row(case, label, build, ref) for label, build in case["vitdense"].items()]
            report_cases.append({k: case[k] for k in ("name", "title", "reference_source")} | {"rows": rows})
            print(case["name"], [(r["reader"], r.get("agreement", r.get("refused"))) for r in rows], flush=True)
        bad_rows = []
        for row in bad:
            d = dm_results[row["name"]]
            said = d.get("error") or f"no error: read {d.get('items')} item(s)" + (
                f"; logged: {d['logged'][0]}" if d.get("logged") else "")  # fmt: skip
            try:
                vitdense_masks(row["vitdense"])
                vsaid = "no error"
            except Exception as err:
                vsaid = first_line(err)
            bad_rows.append({"name": row["name"], "what": row["what"], "datumaro": said, "vitdense": vsaid})
        voc_path = fx / "tests/assets/voc_dataset/voc_dataset1"
        first_read = f"import datumaro as dm; dm.Dataset.import_from({str(voc_path)!r}, 'voc_segmentation')"
        measures = {
            "datumaro_import_s": import_time(python, "import datumaro"),
            "datumaro_first_read_s": import_time(python, first_read),
            "vitdense_reader_import_s": import_time(Path(sys.executable), "import vitdense.data.formats.masks"),
            "vitdense_data_import_s": import_time(Path(sys.executable), "import vitdense.data"),
            "install": install_size(python),
        }
    report = {
        "machine": f"{os.cpu_count()} CPU cores, Python {sys.version.split()[0]}",
        "datumaro_version": dm_results.get("version"),
        "fixtures": {"datumaro": mirror_commit(DATUMARO_MIRROR), "labelme": mirror_commit(LABELME_MIRROR)},
        "measures": measures, "cases": report_cases, "bad_inputs": bad_rows,
    }  # fmt: skip
    (args.out / "readers.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    write_md(args.out / "readers.md", report)
    print(f"wrote {args.out / 'readers.md'}")


if __name__ == "__main__":
    main()
