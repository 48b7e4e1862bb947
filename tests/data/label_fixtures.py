"""Tiny datasets in the formats users export, written under tmp_path: colour masks with a class table, a one-folder
set, COCO / LabelMe / CVAT annotations. Each writer returns the class-id masks the readers must produce."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

NAMES = ["background", "road", "car"]
COLORS = [(0, 0, 0), (128, 64, 128), (64, 0, 128)]
VOID = (255, 255, 255)
W, H = 24, 16


def image(path: Path, seed: int, size: tuple[int, int] = (W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def id_mask(seed: int, classes: tuple[int, ...] = (0, 1, 2), void: bool = True) -> np.ndarray:
    """A mask of blocks of the given classes (255 in one corner when ``void``)."""
    rng = np.random.default_rng(seed)
    mask = np.asarray(classes)[rng.integers(0, len(classes), (H // 4, W // 4))].repeat(4, 0).repeat(4, 1)
    if void:
        mask[:2, :2] = 255
    return mask.astype(np.int64)


def paint(mask: np.ndarray, colors=COLORS, void=VOID) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(colors)] = colors
    lut[255] = void
    return lut[mask]


def classes_txt(root: Path, void: bool = True) -> None:
    lines = [f"{i} {n} {','.join(map(str, c))}" for i, (n, c) in enumerate(zip(NAMES, COLORS))]
    (root / "classes.txt").write_text("\n".join(lines + (["255 void 255,255,255"] if void else [])) + "\n")


def write_color_splits(root: Path, per_split: int = 2) -> dict[str, np.ndarray]:
    """``root/{train,val}/{images,masks}`` with RGB colour masks and ``root/classes.txt``; stem -> expected ids."""
    expected = {}
    for s, split in enumerate(("train", "val")):
        for i in range(per_split):
            stem = f"{split}{i}"
            image(root / split / "images" / f"{stem}.jpg", 10 * s + i)
            expected[stem] = id_mask(10 * s + i)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(paint(expected[stem])).save(root / split / "masks" / f"{stem}.png")
    classes_txt(root)
    return expected


def write_one_folder(root: Path, n: int = 12, rare: dict[int, tuple[int, ...]] | None = None) -> list[str]:
    """``root/images`` + ``root/masks`` (class ids 0..3); image ``i`` holds classes ``rare.get(i, (0, 1))``."""
    rare = rare if rare is not None else {3: (0, 2), 7: (0, 2), 5: (0, 3), 9: (1, 3)}
    (root / "masks").mkdir(parents=True, exist_ok=True)
    stems = []
    for i in range(n):
        stem = f"img{i:03d}"
        image(root / "images" / f"{stem}.png", i)
        Image.fromarray(id_mask(i, rare.get(i, (0, 1)), void=False).astype(np.uint8)).save(
            root / "masks" / f"{stem}.png"
        )
        stems.append(stem)
    (root / "classes.txt").write_text("a\nb\nc\nd\n")
    return stems


def tree(root: Path) -> dict[str, float]:
    """Every file under ``root`` with its modification time (to check nothing was written there)."""
    return {str(p): p.stat().st_mtime for p in sorted(root.rglob("*"))}


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path
