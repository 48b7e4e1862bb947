"""Fake datasets written under tmp_path: small folder layouts, and tiny copies of the benchmarks' official layouts."""

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_folder_dataset(root: Path, num_classes: int = 3, sizes=((40, 48), (36, 52)), void: int = 255) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / split / "images" / f"{i}.jpg")
            mask = rng.integers(0, num_classes, (h, w), dtype=np.uint8)
            mask[0, 0] = void
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("\n".join(f"thing{i}" for i in range(num_classes)) + "\n")
    return root


def write_image_folder(root: Path) -> Path:
    for split in ("train", "val"):
        for name in ("ants", "bees"):
            (root / split / name).mkdir(parents=True)
            Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(root / split / name / "a.jpg")
    return root


def write_coco_folder(root: Path) -> Path:
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(root / split / "images" / "a.jpg")
        coco = {
            "images": [{"id": 1, "file_name": "a.jpg", "width": 50, "height": 40}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 20, 20], "iscrowd": 0}],
            "categories": [{"id": 3, "name": "raccoon"}],
        }
        (root / split / "annotations.json").write_text(json.dumps(coco))
    return root


BENCHMARK_SIZE = (40, 30)  # (w, h) of every fake image


def fake_image(path: Path, seed: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = BENCHMARK_SIZE
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode).save(path)


def fake_mask(path: Path, values: list[int], palette: bool = False) -> np.ndarray:
    """Write a mask whose pixels cycle through ``values``; return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = BENCHMARK_SIZE
    mask = np.resize(np.array(values, np.uint8), h * w).reshape(h, w)
    if palette:  # VOC's masks: palette indices are class ids, the colours are for viewing
        img = Image.frombytes("P", (w, h), mask.tobytes())
        img.putpalette([c for i in range(256) for c in (i * 7 % 256, i * 13 % 256, i * 29 % 256)])
    else:
        img = Image.fromarray(mask)
    img.save(path)
    return mask


def write_ade20k(root: Path) -> Path:
    """``root/ADEChallengeData2016/{images,annotations}/{training,validation}``, 3 + 2 images."""
    base = root / "ADEChallengeData2016"
    for split, n in (("training", 3), ("validation", 2)):
        for i in range(n):
            stem = f"ADE_{split[:5]}_{i:08d}"
            fake_image(base / "images" / split / f"{stem}.jpg", i)
            fake_mask(base / "annotations" / split / f"{stem}.png", [0, 1, 2, 150, 75])
    return root


def write_cityscapes(root: Path) -> Path:
    """``root/leftImg8bit/{train,val}/<city>/*`` + ``root/gtFine/...`` (labelIds and the colour PNGs beside them)."""
    for split, cities in (("train", ("aachen", "bremen")), ("val", ("frankfurt",))):
        for c, city in enumerate(cities):
            for i in range(2 if split == "train" else 3):
                prefix = f"{city}_{c:06d}_{i:06d}"
                fake_image(root / "leftImg8bit" / split / city / f"{prefix}_leftImg8bit.png", i)
                gt = root / "gtFine" / split / city
                fake_mask(gt / f"{prefix}_gtFine_labelIds.png", [0, 7, 8, 9, 26, 33, 34, 1])
                fake_image(gt / f"{prefix}_gtFine_color.png", i)
    return root


def write_voc(root: Path) -> Path:
    """``root/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}`` with palette masks."""
    voc = root / "VOCdevkit" / "VOC2012"
    ids = {"train": ["2007_000032", "2007_000039", "2008_000002"], "val": ["2007_000033", "2009_000001"]}
    for split, names in ids.items():
        for i, name in enumerate(names):
            fake_image(voc / "JPEGImages" / f"{name}.jpg", i)
            fake_mask(voc / "SegmentationClass" / f"{name}.png", [0, 1, 15, 20, 255], palette=True)
        (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def write_coco2017(root: Path) -> Path:
    """train2017/ + val2017/ + annotations/instances_*.json with two categories of non-contiguous ids."""
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / split).mkdir()
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(root / split / "000000000001.jpg")
        coco = {
            "images": [{"id": 1, "file_name": "000000000001.jpg", "width": 40, "height": 30}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 18, "bbox": [2, 3, 10, 12], "iscrowd": 0}],
            "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return root


# DataModule class name -> fake-layout writer (tests/data/test_benchmarks.py, tests/cli/test_configs.py).
FAKE_LAYOUTS = {
    "ADE20KDataModule": write_ade20k,
    "CityscapesDataModule": write_cityscapes,
    "VOCSegmentationDataModule": write_voc,
}
