"""Build the extra classification, detection and instance sets of benchmarks/small_tasks.py from fetched GitHub mirrors.

    python benchmarks/task_datasets.py all                  # every set below, into /work/bench_data/tasks/<name>
    python benchmarks/task_datasets.py bccd --mirror /work/.mirror/Shenggan+BCCD_Dataset/repo

Each set becomes the layout its template reads, outside the repository:

- classification (``configs/classification_folder.yaml``): ``<out>/<name>/{train,val,test}/<class name>/*.jpg``;
- detection (``configs/detection_coco.yaml``): ``<out>/<name>/{train,val,test}/images/*.{jpg,png}`` (the source's
  format) and ``<out>/<name>/{split}/annotations.json`` (COCO boxes ``[x, y, w, h]``, category ids 1..K in
  ``classes`` order), converted from the repositories' Pascal VOC XML, YOLO txt or DeepPCB txt (boxes clipped to the
  image; boxes under 2 pixels a side dropped);
- instance segmentation (``configs/instance_coco.yaml``): the detection layout, each annotation with its
  ``segmentation`` polygons, ``bbox`` (the polygon's extent), ``area`` (the polygon's) and ``iscrowd`` 0.

plus ``task.json`` (task, source repository and commit, licence, classes, split sizes, what was subsampled).

- ``sign_digits`` (classification): ardamavi/Sign-Language-Digits-Dataset, 10 hand signs (digits 0-9), 100x100
  photos; no official split: seeded 70/15/15 per class; kept train 10, val 5, test 15 per class (100 / 50 / 150).
- ``brain_mri`` (classification): Shyam-daniel/testing12, a copy of part of Bhuvaji et al.'s Brain Tumor
  Classification (MRI) set, glioma / meningioma / no tumour / pituitary; the repo's Training (val = seeded 15% of it
  per class) and Testing folders; kept train 25 per class (100), val all (60), test all (58).
- ``clothing`` (classification): alexeygrigorev/clothing-dataset-small (CC0), 10 garment kinds (dress, hat,
  longsleeve, outwear, pants, shirt, shoes, shorts, skirt, t-shirt) in ~400x533 photos on varied backgrounds; the
  repo's train / validation / test folders; kept train 15, val 10, test up to 30 per class (150 / 100 / 245): a
  harder set than the two above (shirt, longsleeve, t-shirt and outwear differ in sleeves, collars and fabric).
- ``bccd`` (detection): Shenggan/BCCD_Dataset, RBC / WBC / Platelets in 640x480 blood smears; the repo's
  ImageSets/Main train/val/test; kept train 32, val 40, test all (72).
- ``kangaroo`` (detection): experiencor/kangaroo, one class in web photos; no official split: seeded 70/15/15; kept
  train 32, val all (25), test all (25).
- ``deeppcb`` (detection): tangsanli5201/DeepPCB (MIT LICENSE; the README asks for research use only), six defect
  kinds (open, short, mousebite, spur, spurious copper, pin hole) in binarised 640x640 PCB scan crops, 3-12 small
  defects per image (boxes ~5% of the side; one size per kind: scale_range auto picks no zoom); the repo's trainval
  (val = seeded 15% of it) and test lists (850 / 150 / 500); kept train 32, val 40, test 40.
- ``aerial_cars`` (detection): jekhor/aerial-cars-dataset (README: KIT AIS images CC BY 3.0, the author's drone
  images CC BY-SA; no LICENSE file), vehicles (the repo's car / truck / bus / minibus as one class, 94% cars) in
  nadir drone frames (1920x1080, 4000x2250, Minsk) and KIT AIS aerial strips (684-1764 px wide, Munich), ~25-55
  boxes per image of ~2.5% of the long side; no official split: seeded 70/15/15 by whole video or sequence
  (85 / 12 / 25 of the 122 images kept: YouTube frames and files absent from the snapshot left out); kept train 32,
  val all (12), test all (25: one KIT AIS sequence).
- ``cwfid_plants`` (instance): cwfid/dataset (non-commercial research only, copyright Bosch), crop / weed plants
  outlined by polygons in 60 top-view 1296x966 images of a carrot field, 2-17 plants per image (boxes ~14% of the
  long side, sizes spread 0.6 octaves); the official train / test lists, val = a seeded 8 of train; all kept
  (31 / 8 / 21): fewer images than the other sets, the only instance set found with its images and polygons in git.

Subsampling (first images of a seeded SHA-256 order of their names, per class for classification) keeps one run within
a few CPU minutes at one thread (about as many optimiser steps as the shared samples' runs); ``--full`` keeps every
image. A build is deterministic: the same mirror commit and seed give the same files. Nothing in the benchmark may
choose settings on the test split: it is for reporting only. Sources are read from the bare git mirror the search
tool's ``fetch`` made (``--mirror``, default ``/work/.mirror/<owner>+<name>/repo``); every image blob is checked to
be real content, not a Git LFS pointer.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from domains import SPLITS, GitMirror, hash_order, prepare_dir, split_stems  # benchmarks/domains.py
from PIL import Image

MIRRORS = Path("/work/.mirror")
DEFAULT_OUT = Path("/work/bench_data/tasks")


class Obj(NamedTuple):
    """One annotated object: class index, ``[x, y, w, h]`` in pixels clipped to the image, and (instance sets) its
    COCO polygons ``[[x1, y1, x2, y2, ...], ...]``."""

    cls: int
    box: list[float]
    polygons: list[list[float]] | None = None


Reader = Callable[[bytes, tuple[int, int], list[str], str], list[Obj]]  # (file, image size, classes, its path)


@dataclass
class Item:
    """One image of a set: where it is in the mirror, its output stem, and its class (classification) or its
    annotation file (detection: read by its TaskSet's ``objects``)."""

    stem: str
    image: str
    label: str = ""
    annotation: str = ""


@dataclass
class TaskSet:
    """What a builder returns: items per split and the facts for task.json."""

    name: str
    task: str
    classes: list[str]
    splits: dict[str, list[Item]]
    info: dict = field(default_factory=dict)
    objects: Reader | None = None  # reads a detection / instance item's annotation file; None: Pascal VOC XML


def clean_stem(path: str) -> str:
    """A file-system friendly stem of ``path`` (``image (10).jpg`` -> ``image_10``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).stem).strip("_")


def per_class_cut(items: list[Item], keep: int | None, seed: int) -> list[Item]:
    """The first ``keep`` items of each class in seeded order (all with ``keep`` None), sorted by stem."""
    out: list[Item] = []
    for label in sorted({i.label for i in items}):
        of_class = {i.stem: i for i in items if i.label == label}
        out += [of_class[s] for s in hash_order(of_class, seed)[:keep]]
    return sorted(out, key=lambda i: (i.label, i.stem))


def first_of(items: list[Item], keep: int | None, seed: int) -> list[Item]:
    """The first ``keep`` items in seeded order (all with ``keep`` None), sorted by stem."""
    by_stem = {i.stem: i for i in items}
    return sorted((by_stem[s] for s in hash_order(by_stem, seed)[:keep]), key=lambda i: i.stem)


def sign_digits(mirror: GitMirror, seed: int, full: bool) -> TaskSet:
    """Sign Language Digits: 2062 photos of hands showing 0-9 (218 students, ~10 photos each), 100x100 RGB."""
    classes = [str(d) for d in range(10)]
    splits: dict[str, list[Item]] = {s: [] for s in SPLITS}
    for label in classes:
        files = {clean_stem(p): p for p in mirror.files(f"Dataset/{label}") if p.lower().endswith(".jpg")}
        for split, stems in split_stems(files, seed).items():
            splits[split] += [Item(f"{label}_{s}", files[s], label) for s in stems]
    keep = {"train": 10, "val": 5, "test": 15}
    if not full:
        splits = {k: per_class_cut(v, keep[k], seed) for k, v in splits.items()}
    info = {
        "domain": "hand signs (digits 0-9, photos of students' hands on a white background)",
        "split_source": f"no official split: seeded 70/15/15 per class (seed {seed}, SHA-256 order of the file names)",
        "subsampled": "full" if full else f"per class: {keep}",
        "caveat": "the repository does not say which student took which photo: one student's hands can sit in "
        "train and test alike",
        "licence": "Apache-2.0 (the repository's LICENSE)",
    }
    return TaskSet("sign_digits", "classification", classes, splits, info)


MRI_CLASSES = {"glioma_tumor": "glioma", "meningioma_tumor": "meningioma", "no_tumor": "no_tumor",
               "pituitary_tumor": "pituitary"}  # fmt: skip


def brain_mri(mirror: GitMirror, seed: int, full: bool) -> TaskSet:
    """Brain MRI slices in four classes: the repo's Training (399) and Testing (58) folders; val cut from Training."""
    splits: dict[str, list[Item]] = {s: [] for s in SPLITS}
    for folder, label in MRI_CLASSES.items():
        train = {clean_stem(p): p for p in mirror.files(f"Training/{folder}") if p.lower().endswith(".jpg")}
        cut = split_stems(train, seed, val=0.15, test=0.0)
        # split_stems keeps at least one image for the (empty) test share: it goes back to train
        splits["train"] += [Item(f"{label}_{s}", train[s], label) for s in sorted(cut["train"] + cut["test"])]
        splits["val"] += [Item(f"{label}_{s}", train[s], label) for s in cut["val"]]
        splits["test"] += [Item(f"{label}_{clean_stem(p)}", p, label) for p in mirror.files(f"Testing/{folder}")
                           if p.lower().endswith(".jpg")]  # fmt: skip
    keep = {"train": 25, "val": None, "test": None}
    if not full:
        splits["train"] = per_class_cut(splits["train"], keep["train"], seed)
    info = {
        "domain": "medical imaging (brain MRI slices: glioma, meningioma, pituitary tumour, no tumour)",
        "split_source": f"the repository's Training / Testing folders; val = seeded 15% of Training per class "
        f"(seed {seed}, SHA-256 order)",
        "subsampled": "full" if full else "train: 25 per class; val and test: all",
        "caveat": "a copy (100 Training images per class, 10-18 Testing) of Bhuvaji et al.'s Brain Tumor "
        "Classification (MRI) set; its Testing images are known to differ from Training in source (harder)",
        "licence": "none stated in this copy; the original set (github.com/sartajbhuvaji/brain-tumor-classification-"
        "dataset) is MIT",
    }
    return TaskSet("brain_mri", "classification", list(MRI_CLASSES.values()), splits, info)


CLOTHING_CLASSES = ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt"]
CLOTHING_FOLDERS = {"train": "train", "val": "validation", "test": "test"}


def clothing(mirror: GitMirror, seed: int, full: bool) -> TaskSet:
    """Clothing dataset (subset): 3781 photos of 10 garment kinds, the repo's train / validation / test folders."""
    splits: dict[str, list[Item]] = {s: [] for s in SPLITS}
    for split, folder in CLOTHING_FOLDERS.items():
        for label in CLOTHING_CLASSES:
            splits[split] += [Item(f"{label}_{clean_stem(p)}", p, label) for p in mirror.files(f"{folder}/{label}")
                              if p.lower().endswith(".jpg")]  # fmt: skip
    # the repo's test has 12 (hat, skirt) to 73 (shoes) per class: capped at 30 so that no class dominates accuracy
    keep = {"train": 15, "val": 10, "test": 30}
    if not full:
        splits = {k: per_class_cut(v, keep[k], seed) for k, v in splits.items()}
    info = {
        "domain": "clothing photos (10 garment kinds, one garment per photo, mostly laid out on floors, beds, tables)",
        "split_source": "the repository's train / validation / test folders",
        "subsampled": "full" if full else f"per class (first of a seeded SHA-256 order; all where fewer): {keep}",
        "caveat": "classes differ in size in the repository (train: 112 skirts to 795 t-shirts); the kept "
        "train and val are balanced, test is not (hat and skirt have 12 test images each)",
        "licence": "CC0-1.0 (the repository's LICENSE)",
    }
    return TaskSet("clothing", "classification", CLOTHING_CLASSES, splits, info)


def voc_items(mirror: GitMirror, stems: list[str], images: str, annots: str) -> list[Item]:
    return [Item(clean_stem(s), f"{images}/{s}.jpg", annotation=f"{annots}/{s}.xml") for s in stems]


def bccd(mirror: GitMirror, seed: int, full: bool) -> TaskSet:
    """BCCD: 364 blood-smear images (640x480) with red cells, white cells and platelets boxed, official splits."""
    splits = {}
    for split in SPLITS:
        stems = mirror.read(f"BCCD/ImageSets/Main/{split}.txt").decode().split()
        splits[split] = voc_items(mirror, stems, "BCCD/JPEGImages", "BCCD/Annotations")
    keep = {"train": 32, "val": 40, "test": None}
    if not full:
        splits = {k: first_of(v, keep[k], seed) for k, v in splits.items()}
    info = {
        "domain": "medical microscopy (blood smear: RBC, WBC, platelets; many small, touching cells)",
        "split_source": "the repository's BCCD/ImageSets/Main/{train,val,test}.txt",
        "subsampled": "full" if full else f"first of a seeded order: {keep}",
        "licence": "MIT (the repository's LICENSE)",
    }
    return TaskSet("bccd", "detection", ["RBC", "WBC", "Platelets"], splits, info)


def kangaroo(mirror: GitMirror, seed: int, full: bool) -> TaskSet:
    """Kangaroo: 164 web photos with kangaroos boxed (Pascal VOC XML, one class)."""
    stems = sorted(Path(p).stem for p in mirror.files("annots", ".xml"))
    cut = split_stems(stems, seed)
    splits = {k: voc_items(mirror, v, "images", "annots") for k, v in cut.items()}
    keep = {"train": 32, "val": None, "test": None}
    if not full:
        splits["train"] = first_of(splits["train"], keep["train"], seed)
    info = {
        "domain": "wildlife web photos (kangaroos; close in kind to the raccoon sample)",
        "split_source": f"no official split: seeded 70/15/15 (seed {seed}, SHA-256 order of the file names)",
        "subsampled": "full" if full else "train: first 32 of a seeded order; val and test: all",
        "licence": "none stated in the repository",
    }
    return TaskSet("kangaroo", "detection", ["kangaroo"], splits, info)


PCB_CLASSES = ["open", "short", "mousebite", "spur", "copper", "pin-hole"]  # DeepPCB's type ids 1..6


def deeppcb(mirror: GitMirror, seed: int, full: bool) -> TaskSet:
    """DeepPCB: 1,500 binarised 640x640 crops of PCB scans, each with 3-12 boxed defects of six kinds; the repo's
    trainval (1,000) / test (500) lists; val cut from trainval. Only the tested image of each pair is used (the
    aligned defect-free template beside it is not)."""

    def listed(name: str) -> list[Item]:
        items = []
        for line in mirror.read(f"PCBData/{name}.txt").decode().splitlines():
            if line.strip():  # "group00041/00041/00041000.jpg group00041/00041_not/00041000.txt"
                image, annotation = line.split()
                stem = image.removesuffix(".jpg")
                items.append(Item(Path(stem).name, f"PCBData/{stem}_test.jpg", annotation=f"PCBData/{annotation}"))
        return items

    trainval = {i.stem: i for i in listed("trainval")}
    cut = split_stems(trainval, seed, val=0.15, test=0.0)
    # split_stems keeps at least one image for the (empty) test share: it goes back to train
    splits = {"train": [trainval[s] for s in sorted(cut["train"] + cut["test"])],
              "val": [trainval[s] for s in cut["val"]], "test": listed("test")}  # fmt: skip
    keep = {"train": 32, "val": 40, "test": 40}
    if not full:
        splits = {k: first_of(v, keep[k], seed) for k, v in splits.items()}
    info = {
        "domain": "industrial inspection (binarised PCB scans, ~48 px/mm; small defects: open, short, mousebite, spur, "
        "spurious copper, pin hole)",
        "split_source": f"the repository's PCBData/trainval.txt and test.txt; val = seeded 15% of trainval "
        f"(seed {seed}, SHA-256 order)",
        "subsampled": "full" if full else f"first of a seeded order: {keep}",
        "caveat": "the crops come from 11 boards (groupNNNNN); the repository's own split puts crops of one board in "
        "trainval and test alike, and so does val here. The README adds defects by hand to reach 3-12 per image",
        "licence": "MIT (the repository's LICENSE); its README asks for research use only",
    }
    return TaskSet("deeppcb", "detection", PCB_CLASSES, splits, info, objects=deeppcb_boxes)


AERIAL_NAMES = ["car", "truck", "bus", "minibus", "cyclist"]  # aerial.names; no box is a cyclist
AERIAL_ABSENT = {f"DJI_{n}.JPG" for n in ("0006", "0007", "0008", "0009", "0011", "0014", "0015", "0021", "0026",
                                          "0057", "0265", "0267")} | {"yakubava.jpg"}  # fmt: skip


def aerial_sequence(stem: str) -> str:
    """The video, flight or image sequence of an image of the aerial cars repo (its frames overlap: one split each)."""
    if m := re.fullmatch(r"MOS(\d+)", stem):  # KIT AIS: MOS74-93 are MunichStreet02's frames 74-93 cut another way
        return "MunichStreet02" if int(m[1]) < 100 else "MOS155-179"
    if re.fullmatch(r"DJI_\d{4}", stem):
        return "DJI photos"  # single full-resolution photos of one flight
    return re.sub(r"-(MOS)?\d+$", "", stem)  # DJI_0005-0018 -> DJI_0005, MunichStreet02-MOS74 -> MunichStreet02


def group_split(stems: list[str], group_of: Callable[[str], str], seed: int) -> dict[str, list[str]]:
    """A seeded 70/15/15 cut of ``stems`` that keeps each group in one split: groups in a seeded order go, one at a
    time, to the split furthest below its share of the images."""
    groups: dict[str, list[str]] = {}
    for s in stems:
        groups.setdefault(group_of(s), []).append(s)
    share = {"train": 0.7, "val": 0.15, "test": 0.15}
    cut: dict[str, list[str]] = {k: [] for k in SPLITS}
    for g in hash_order(groups, seed):
        split = max(SPLITS, key=lambda k: share[k] * len(stems) - len(cut[k]))
        cut[split] += groups[g]
    return {k: sorted(v) for k, v in cut.items()}


def aerial_cars(mirror: GitMirror, seed: int, full: bool) -> TaskSet:
    """Aerial cars: nadir drone frames and photos (Minsk) and KIT AIS aerial images (Munich) with cars, trucks, buses
    and minibuses boxed (YOLO txt); no official split: seeded 70/15/15 by video / sequence."""
    images = sorted(p for p in mirror.sizes if "/" not in p and re.search(r"\.(jpg|png)$", p, re.I))
    # harlem-*: frames of the YouTube video the README lists ("YouTube standard license, use with caution"), the
    # only source that is neither the author's drone (DJI*, yakubava) nor KIT AIS (MOS*, MunichStreet02-*)
    images = [p for p in images if p not in AERIAL_ABSENT and not p.startswith("harlem-")]
    by_stem = {clean_stem(p): Item(clean_stem(p), p, annotation=f"{Path(p).stem}.txt") for p in images}
    cut = group_split(list(by_stem), aerial_sequence, seed)
    splits = {k: [by_stem[s] for s in v] for k, v in cut.items()}
    keep = {"train": 32, "val": None, "test": None}
    if not full:
        splits["train"] = first_of(splits["train"], keep["train"], seed)
    groups = {k: sorted({aerial_sequence(s) for s in v}) for k, v in cut.items()}
    info = {
        "domain": "aerial / drone imagery, nadir (vehicles of 10-60 px in 684-4000 px wide images; the repo's car, "
        "truck, bus and minibus boxes as one class: 94% are cars, 5 are trucks)",
        "split_source": f"no official split: seeded 70/15/15 of whole videos / sequences (seed {seed}, SHA-256 order "
        f"of their names; consecutive frames overlap): {groups}",
        "subsampled": "full" if full else "train: first 32 of a seeded order; val and test: all",
        "left_out": "harlem-* (19 frames of a YouTube video, licence unclear); 12 full-resolution DJI_*.JPG photos "
        "and yakubava.jpg (absent from the fetched snapshot, which leaves out the largest files)",
        "caveat": "test holds whole sequences, so it measures transfer to unseen streets (and, with few sequences, "
        "is noisy)",
        "licence": "per the README: KIT AIS images (MOS*, MunichStreet02-*) CC BY 3.0 (c) KIT; the author's own "
        "drone images CC BY-SA (c) Yauhen Kharuzhy and the Minsk OSM community; the repository has no LICENSE file",
    }
    return TaskSet("aerial_cars", "detection", ["vehicle"], splits, info, objects=aerial_boxes)


def aerial_boxes(text: bytes, size: tuple[int, int], classes: list[str], where: str) -> list[Obj]:
    """The repo's YOLO boxes, every kind as one vehicle class (trucks, buses and minibuses are 1-5% of the boxes: as
    classes of their own, a handful of test boxes would swing the mean AP)."""
    return [Obj(0, o.box) for o in yolo_boxes(text, size, AERIAL_NAMES, where)]


CWFID_CLASSES = ["crop", "weed"]


def cwfid_plants(mirror: GitMirror, seed: int, full: bool) -> TaskSet:
    """CWFID: 60 top-view 1296x966 images of an organic carrot field, each plant outlined by a polygon typed crop or
    weed (annotations/NNN_annotation.yaml); the official train / test lists, val = a seeded 8 of train (as
    benchmarks/domains.py cuts the same images for its semantic cwfid domain)."""
    import yaml

    official = yaml.safe_load(mirror.read("train_test_split.yaml"))
    test = sorted(set(official["test"]))
    train = [f"{i:03d}" for i in sorted(set(official["train"]) - set(test))]  # image 28 is in both lists: test only
    val = sorted(hash_order(train, seed)[:8])
    ids = {"train": [s for s in train if s not in val], "val": val, "test": [f"{i:03d}" for i in test]}
    splits = {k: [Item(s, f"images/{s}_image.png", annotation=f"annotations/{s}_annotation.yaml") for s in v]
              for k, v in ids.items()}  # fmt: skip
    info = {
        "domain": "agriculture, top view (crop and weed plants in an organic carrot field; 2-17 plants per image, "
        "weeds twice as many as crops; plants of every size, touching and overlapping)",
        "split_source": "official train/test (train_test_split.yaml; image 028, listed in both, kept in test); "
        f"val = 8 of the official train images (seed {seed}, SHA-256 order)",
        "subsampled": "none: every image is kept (60; --full changes nothing)",
        "masks": "the annotation polygons as drawn: a plant's outline, soil between its leaves included (the repo's "
        "per-pixel annotation PNGs are these polygons within the vegetation mask)",
        "caveat": "60 images, fewer than the ~100 the other sets have; two one-point 'polygons' (weeds in 009 and "
        "018) are no outline and are left out",
        "licence": "non-commercial research only, as the repository's README states (copyright Bosch); cite Haug & "
        "Ostermann, CVPPP/ECCV workshops 2014",
    }
    return TaskSet("cwfid_plants", "instance", CWFID_CLASSES, splits, info, objects=cwfid_objects)


def cwfid_objects(text: bytes, size: tuple[int, int], classes: list[str], where: str) -> list[Obj]:
    """The typed plant polygons of a CWFID annotation YAML; an outline of fewer than 3 points is left out."""
    import yaml

    out = []
    for shape in yaml.safe_load(text).get("annotation") or []:
        if shape["type"] not in classes:
            raise SystemExit(f"{where}: plant type '{shape['type']}' is not among {classes}.")
        xs, ys = (shape["points"][k] if isinstance(shape["points"][k], list) else [shape["points"][k]] for k in "xy")
        box = clip_box(min(xs), min(ys), max(xs), max(ys), size)
        if len(xs) >= 3 and box:
            polygon = [float(v) for xy in zip(xs, ys, strict=True) for v in xy]
            out.append(Obj(classes.index(shape["type"]), box, [polygon]))
    return out


@dataclass
class Source:
    repo: str
    commit: str  # the commit the benchmark was built from; another one builds with a warning
    build: Callable[[GitMirror, int, bool], TaskSet]


SOURCES = {
    "sign_digits": Source("ardamavi/Sign-Language-Digits-Dataset", "4b09433ef9d5c60602e8805bb54b8aa2428527f8",
                          sign_digits),
    "brain_mri": Source("Shyam-daniel/testing12", "4926a00e69bd7bd9828b4df02b3efa8d7b40f2c3", brain_mri),
    "clothing": Source("alexeygrigorev/clothing-dataset-small", "11961516512414bf9f6c150a832cfd21b54a6b54", clothing),
    "bccd": Source("Shenggan/BCCD_Dataset", "d272fb14cdff6e473fafeeeba32aba5f560e9e43", bccd),
    "kangaroo": Source("experiencor/kangaroo", "882bbbd75ba49cb8cf9393e06d88ebaec293af32", kangaroo),
    "deeppcb": Source("tangsanli5201/DeepPCB", "08e98c4db5922613fb97176eb3d6497d48260cb1", deeppcb),
    "aerial_cars": Source("jekhor/aerial-cars-dataset", "d2ed927fe2b06e4794e90d6320152b940808ddd9", aerial_cars),
    "cwfid_plants": Source("cwfid/dataset", "36290d0912a032f0bd1a5678ed55457ddafde217", cwfid_plants),
}  # fmt: skip


def clip_box(x0: float, y0: float, x1: float, y1: float, size: tuple[int, int]) -> list[float] | None:
    """``[x, y, w, h]`` of a corner box clipped to the image; None when under 2 pixels a side."""
    w, h = size
    x0, x1 = sorted((min(max(x0, 0), w), min(max(x1, 0), w)))
    y0, y1 = sorted((min(max(y0, 0), h), min(max(y1, 0), h)))
    return [x0, y0, x1 - x0, y1 - y0] if x1 - x0 >= 2 and y1 - y0 >= 2 else None


def voc_boxes(xml: bytes, size: tuple[int, int], classes: list[str], where: str) -> list[Obj]:
    """(class index, clipped [x, y, w, h]) of each object of a VOC file; boxes under 2 pixels a side dropped."""
    out = []
    for obj in ET.fromstring(xml).iter("object"):
        name = obj.findtext("name", "").strip()
        if name not in classes:
            raise SystemExit(f"{where}: class '{name}' is not among {classes}.")
        b = obj.find("bndbox")
        box = clip_box(*(float(b.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax")), size)
        if box:
            out.append(Obj(classes.index(name), box))
    return out


def yolo_boxes(text: bytes, size: tuple[int, int], classes: list[str], where: str) -> list[Obj]:
    """Boxes of a YOLO label file (``class cx cy w h`` per line, relative to the image size), clipped like VOC's."""
    out = []
    for line in text.decode().splitlines():
        if not line.strip():
            continue
        k, cx, cy, bw, bh = line.split()
        if not 0 <= int(k) < len(classes):
            raise SystemExit(f"{where}: class {k} is not among the {len(classes)} classes {classes}.")
        cx, bw = float(cx) * size[0], float(bw) * size[0]
        cy, bh = float(cy) * size[1], float(bh) * size[1]
        box = clip_box(cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, size)
        if box:
            out.append(Obj(int(k), box))
    return out


def deeppcb_boxes(text: bytes, size: tuple[int, int], classes: list[str], where: str) -> list[Obj]:
    """Boxes of a DeepPCB annotation (``x1 y1 x2 y2 type`` per line, type 1..6; the README writes commas)."""
    out = []
    for line in text.decode().splitlines():
        if not line.strip():
            continue
        *corners, kind = line.replace(",", " ").split()
        if not 1 <= int(kind) <= len(classes):
            raise SystemExit(f"{where}: defect type {kind} is not among 1..{len(classes)} ({classes}).")
        box = clip_box(*(float(v) for v in corners), size)
        if box:
            out.append(Obj(int(kind) - 1, box))
    return out


def polygon_area(flat: list[float]) -> float:
    """Area of a polygon ``[x1, y1, x2, y2, ...]`` (shoelace formula)."""
    x, y = flat[0::2], flat[1::2]
    return abs(sum(x[i] * y[i - 1] - x[i - 1] * y[i] for i in range(len(x)))) / 2


def whole_image(data: bytes, name: str, summary: dict) -> bytes:
    """The image's bytes, or, when the file in the repository is cut short (kangaroo has one such JPEG, which the
    templates refuse to read), the part that decodes re-encoded as a whole JPEG (quality 95), listed in task.json
    under "repaired"."""
    try:
        Image.open(io.BytesIO(data)).load()
        return data
    except OSError as err:
        if "truncated" not in str(err):
            raise
    from PIL import ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=95)
    summary.setdefault("repaired", []).append(f"{name}: truncated in the repository, re-encoded from what decodes")
    print(f"repaired {name}: truncated in the repository, re-encoded from what decodes", flush=True)
    return out.getvalue()


def write_set(ts: TaskSet, mirror: GitMirror, out: Path, source: dict) -> dict:
    """Write the images (and COCO files) of ``ts`` under ``out``; return the summary written to task.json."""
    prepare_dir(out, marker="task.json")
    summary: dict = {"name": ts.name, "task": ts.task, **source, **ts.info, "classes": ts.classes, "splits": {}}
    for split in SPLITS:
        items, per_class = ts.splits.get(split, []), dict.fromkeys(ts.classes, 0)
        coco: dict = {"images": [], "annotations": [],
                      "categories": [{"id": i + 1, "name": c} for i, c in enumerate(ts.classes)]}  # fmt: skip
        for n, item in enumerate(items, 1):
            data = whole_image(mirror.read(item.image), item.image, summary)
            name = item.stem + {".jpeg": ".jpg"}.get(suffix := Path(item.image).suffix.lower(), suffix)
            if ts.task == "classification":
                folder = out / split / item.label
                folder.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
                per_class[item.label] += 1
                continue
            (out / split / "images").mkdir(parents=True, exist_ok=True)
            (out / split / "images" / name).write_bytes(data)
            size = Image.open(io.BytesIO(data)).size
            coco["images"].append({"id": n, "file_name": name, "width": size[0], "height": size[1]})
            for obj in (ts.objects or voc_boxes)(mirror.read(item.annotation), size, ts.classes, item.annotation):
                ann = {"id": len(coco["annotations"]) + 1, "image_id": n, "category_id": obj.cls + 1, "bbox": obj.box,
                       "area": obj.box[2] * obj.box[3], "iscrowd": 0}  # fmt: skip
                if obj.polygons is not None:  # instance sets: the mask's area, as COCO counts it
                    ann.update(segmentation=obj.polygons, area=sum(map(polygon_area, obj.polygons)))
                coco["annotations"].append(ann)
                per_class[ts.classes[obj.cls]] += 1
        if ts.task != "classification":
            (out / split / "annotations.json").write_text(json.dumps(coco))
        key = "images_per_class" if ts.task == "classification" else "boxes_per_class"
        summary["splits"][split] = {"images": len(items), key: per_class}
    (out / "task.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="+", choices=(*SOURCES, "all"), help="sets to build")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output root: <out>/<name>/...")
    p.add_argument("--mirror", type=Path, help="git directory of the fetched mirror (one set only)")
    p.add_argument("--mirror-root", type=Path, default=MIRRORS, help="where fetch puts mirrors: <owner>+<name>/repo")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and subsamples made here")
    p.add_argument("--full", action="store_true", help="keep every image (no subsampling)")
    args = p.parse_args(argv)
    names = list(SOURCES) if "all" in args.names else list(dict.fromkeys(args.names))
    if args.mirror and len(names) != 1:
        raise SystemExit("--mirror names one mirror: give exactly one set with it.")
    if args.out.resolve().is_relative_to(Path(__file__).resolve().parents[1]):
        raise SystemExit(f"--out '{args.out}' is inside the repository: data stays out of it.")
    for name in names:
        src = SOURCES[name]
        mirror = GitMirror(args.mirror or args.mirror_root / src.repo.replace("/", "+") / "repo")
        if mirror.commit != src.commit:
            print(f"warning: {name}: mirror is at {mirror.commit}, the benchmark was built from {src.commit}")
        source = {"repo": f"github.com/{src.repo}", "commit": mirror.commit}
        s = write_set(src.build(mirror, args.seed, args.full), mirror, args.out / name, source)
        sizes = ", ".join(f"{k} {v['images']}" for k, v in s["splits"].items())
        print(f"{name} ({s['task']}, {len(s['classes'])} classes): {sizes}; {s['subsampled']}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
