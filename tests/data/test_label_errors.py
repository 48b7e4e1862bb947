"""Bad inputs in every label format: each is an error naming the file and the value, and nothing is written into
the user's data folder."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.label_fixtures import image, paint, tree, write_json
from tests.data.test_polygons import CLASSES, H, W, cvat_xml
from vitdense.data import SegmentationFolderDataModule

STEMS = ("a", "b", "c")


def color_masks(root: Path) -> dict:
    for i, stem in enumerate(STEMS):
        image(root / "images" / f"{stem}.png", i, (W, H))
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(paint(np.full((H, W), i % 3))).save(root / "masks" / f"{stem}.png")
    (root / "classes.txt").write_text("0 background 0,0,0\n1 road 128,64,128\n2 car 64,0,128\n")
    return {}


def coco(root: Path, anns: list | None = None, images: list | None = None, cats: list | None = None) -> dict:
    for i, stem in enumerate(STEMS):
        image(root / "images" / f"{stem}.png", i, (W, H))
    images = images or [{"id": i, "file_name": f"{s}.png", "width": W, "height": H} for i, s in enumerate(STEMS)]
    box = [2, 2, 8, 2, 8, 6, 2, 6]
    anns = anns or [{"id": 10 + i, "image_id": i, "category_id": 1, "segmentation": [box]} for i in range(3)]
    cats = cats or [{"id": 1, "name": "road"}, {"id": 2, "name": "car"}]
    write_json(root / "annotations.json", {"images": images, "annotations": anns, "categories": cats})
    return {"classes": CLASSES}


def labelme(root: Path, shapes: list | None = None, width: int = W) -> dict:
    for i, stem in enumerate(STEMS):
        image(root / "images" / f"{stem}.png", i, (W, H))
        shape = {"label": "road", "shape_type": "polygon", "points": [[1, 1], [8, 1], [8, 6]]}
        data = {"shapes": shapes if shapes is not None and stem == "b" else [shape], "imageWidth": width if stem ==
                "b" else W, "imageHeight": H, "imagePath": f"../images/{stem}.png"}  # fmt: skip
        write_json(root / "annotations" / f"{stem}.json", data)
    return {"classes": CLASSES}


def cvat(root: Path, shapes: str = '<polygon label="road" points="1,1;8,1;8,6"></polygon>', raw: str = "") -> dict:
    images = "".join(
        f'<image id="{i}" name="{s}.png" width="{W}" height="{H}">{shapes if s == "b" else ""}</image>'
        for i, s in enumerate(STEMS)
    )
    for i, stem in enumerate(STEMS):
        image(root / "images" / f"{stem}.png", i, (W, H))
    xml = cvat_xml("").replace(f'<image id="0" name="scene.png" width="{W}" height="{H}"></image>', images)
    (root / "annotations.xml").write_text(raw or xml)
    return {}


def unknown_colour(root: Path) -> dict:
    color_masks(root)
    bad = paint(np.zeros((H, W), np.int64))
    bad[:3, :3] = (9, 9, 9)
    Image.fromarray(bad).save(root / "masks" / "b.png")
    return {}


def wrong_size_mask(root: Path) -> dict:
    color_masks(root)
    Image.fromarray(paint(np.zeros((H, W + 2), np.int64))).save(root / "masks" / "c.png")
    return {}


def duplicate_stems(root: Path) -> dict:
    color_masks(root)
    image(root / "images" / "a.jpg", 5, (W, H))
    return {}


def bad_class_colour(root: Path) -> dict:
    color_masks(root)
    (root / "classes.txt").write_text("0 background 0,0,0\n1 road 300,64,128\n")
    return {}


def overwrite(kwargs: dict, path: Path, text: str) -> dict:
    path.write_text(text)
    return kwargs


CASES: dict[str, tuple[Callable[[Path], dict], str]] = {
    "unknown colour": (unknown_colour, r"masks/b.png' has 1 colour\(s\) in no class entry.*\(9,9,9\) x 9 px"),
    "mask of wrong size": (wrong_size_mask, r"images/c.png' is 20x12 but '.*masks/c.png' is 22x12"),
    "duplicate stems": (duplicate_stems, r"share the stem 'a' \(a.jpg, a.png\)"),
    "class colour out of range": (bad_class_colour, r"classes.txt' class 1: colour \[300, 64, 128\]"),
    "empty COCO JSON": (
        lambda r: overwrite(coco(r), r / "annotations.json", ""),
        "annotations.json' is not valid JSON",
    ),
    "COCO polygon outside image": (
        lambda r: coco(r, anns=[{"id": 7, "image_id": 1, "category_id": 1, "segmentation": [[2, 2, 30, 2, 30, 6]]}]),
        r"Annotation id 7 in '.*annotations.json' has a polygon reaching \(2..30",
    ),
    "COCO category not a class": (
        lambda r: coco(r, cats=[{"id": 1, "name": "truck"}]),
        r"annotations.json' annotation "
        r"id 10 has the category 'truck' \(id 1\), which is no class",
    ),
    "COCO image missing": (
        lambda r: coco(r, images=[{"id": 0, "file_name": "gone.png", "width": W, "height": H}]),
        r"annotations.json' image id 0 annotates the image 'gone.png', which is not in",
    ),
    "COCO degenerate polygon": (
        lambda r: coco(r, anns=[{"id": 3, "image_id": 0, "category_id": 1, "segmentation": [[1, 1, 5, 5, 9, 9]]}]),
        r"annotations.json' annotation id 3 \(polygon\) is degenerate",
    ),
    "LabelMe unknown label": (
        lambda r: labelme(r, [{"label": "truck", "points": [[1, 1], [5, 1], [5, 5]]}]),
        r"b.json' shape 0 \(polygon 'truck'\) has the label 'truck'",
    ),
    "LabelMe degenerate": (
        lambda r: labelme(r, [{"label": "car", "shape_type": "rectangle", "points": [[3, 3], [3, 8]]}]),
        r"b.json' shape 0 \(rectangle 'car'\) is degenerate",
    ),
    "LabelMe outside image": (
        lambda r: labelme(r, [{"label": "car", "points": [[1, 1], [50, 1], [5, 5]]}]),
        r"b.json' shape 0 \(polygon 'car'\) reaches x 1.0..50.0",
    ),
    "LabelMe size differs from image": (
        lambda r: labelme(r, [], width=W + 4),
        r"images/b.png' is 20x12 but '.*annotations/b.json' is 24x12",
    ),
    "LabelMe empty JSON": (
        lambda r: overwrite(labelme(r), r / "annotations" / "c.json", "{}"),
        r"c.json' has no 'shapes' list",
    ),
    "CVAT polyline width not a number": (  # a polyline without a width is skipped and counted (test_cvat_exports)
        lambda r: cvat(r, '<polyline label="road" points="1,1;5,5"><attribute name="width">x</attribute></polyline>'),
        r"annotations.xml' image 'b.png' shape 0 \(polyline 'road'\): its width attribute 'x' is not a positive",
    ),
    "CVAT label not in classes": (
        lambda r: cvat(r, '<box label="bus" xtl="1" ytl="1" xbr="5" ybr="5"></box>'),
        r"image 'b.png' shape 0 \(box 'bus'\) has the label 'bus'",
    ),
    "CVAT broken XML": (lambda r: cvat(r, raw="<annotations><image"), r"annotations.xml' is not valid XML"),
    "CVAT mask RLE of the wrong length": (
        lambda r: cvat(r, '<mask label="car" rle="3, 4" left="0" top="0" width="4" height="4"></mask>'),
        r"shape 0 \(mask 'car'\): rle runs sum to 7 but its box is 4x4=16 px",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_named_and_nothing_is_written(case: str, tmp_path: Path) -> None:
    write, message = CASES[case]
    root = tmp_path / "data"
    root.mkdir()
    kwargs = write(root)
    before = tree(root)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        dm = SegmentationFolderDataModule(str(root), val_fraction=0.34, **kwargs)
        dm.setup("fit")
    assert tree(root) == before
