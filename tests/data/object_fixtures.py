"""Tiny LabelMe and CVAT object annotations (boxes, polygons, circles, masks) written under tmp_path, each writer
returning the boxes, labels and masks the detection / instance readers must produce, made by hand."""

from pathlib import Path

import numpy as np

from tests.data.label_fixtures import H, W, image, write_json

NAMES = ["car", "person"]


def region(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def labelme_scene(base: Path, stem: str = "scene") -> dict:
    """``base/images/<stem>.png`` + ``base/annotations/<stem>.json``: a polygon, a rectangle drawn from its lower right
    corner, a circle, an ``__ignore__`` region and a polygon half a pixel past the right edge."""
    image(base / "images" / f"{stem}.png", 0)
    shapes = [
        {"label": "car", "shape_type": "polygon", "points": [[2, 2], [10, 2], [10, 8], [2, 8]]},
        {"label": "person", "shape_type": "rectangle", "points": [[20, 14], [14, 9]]},
        {"label": "car", "shape_type": "circle", "points": [[6, 12], [8, 12]]},
        {"label": "__ignore__", "shape_type": "rectangle", "points": [[0, 0], [1, 1]]},
        {"label": "person", "shape_type": "polygon", "points": [[21, 0], [24.5, 0], [24.5, 4], [21, 4]]},
    ]
    write_json(base / "annotations" / f"{stem}.json",
               {"shapes": shapes, "imagePath": f"../images/{stem}.png", "imageWidth": W, "imageHeight": H})  # fmt: skip
    circle = np.zeros((H, W), np.uint8)  # Pillow's ellipse in [4, 10, 8, 14], as labelme draws a circle of radius 2
    circle[[10, 14], 5:8] = 1
    circle[11:14, 4:9] = 1
    return {
        "boxes": [[2, 2, 10, 8], [14, 9, 20, 14], [4, 10, 8, 14], [21, 0, 24, 4]],  # the last one clipped
        "labels": [0, 1, 0, 1],
        # labelme draws polygons and rectangles with their outline: both corner pixels are inside
        "masks": [region(2, 9, 2, 11), region(9, 15, 14, 21), circle, region(0, 5, 21, 24)],
    }


def cvat_rle(local: np.ndarray) -> str:
    """CVAT's mask RLE: run lengths alternating 0s and 1s, 0s first, row by row."""
    flat = local.reshape(-1)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]]))
    return ", ".join(str(r) for r in ([0, *runs] if flat[0] else runs))


def cvat_xml(images: dict[str, str], labels: tuple[str, ...] = tuple(NAMES)) -> str:
    """An annotations.xml with ``images`` (name -> shape elements) and the labels in its meta."""
    meta = "".join(f"<label><name>{n}</name><color>#102030</color></label>" for n in labels)
    body = "".join(f'<image id="{i}" name="{name}" width="{W}" height="{H}">{shapes}</image>'
                   for i, (name, shapes) in enumerate(images.items()))  # fmt: skip
    return (f'<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version><meta><task><labels>{meta}'
            f"</labels></task></meta>{body}</annotations>")  # fmt: skip


def cvat_scene(base: Path, name: str = "scene.png") -> dict:
    """``base/images/<name>`` + ``base/annotations.xml``: a box, a polygon, a mask with a hole and a tag."""
    image(base / "images" / name, 0)
    local = np.ones((3, 4), np.uint8)
    local[1, 1:3] = 0
    shapes = (
        '<box label="car" xtl="2" ytl="2" xbr="10" ybr="8" z_order="1"></box>'
        '<polygon label="person" points="14,9;20,9;20,14;14,14" z_order="0"></polygon>'
        f'<mask label="car" rle="{cvat_rle(local)}" left="1" top="11" width="4" height="3" z_order="0"></mask>'
        '<tag label="person"></tag>'
    )
    (base / "annotations.xml").write_text(cvat_xml({name: shapes}))
    holed = region(11, 14, 1, 5)
    holed[12, 2:4] = 0
    return {
        "boxes": [[2, 2, 10, 8], [14, 9, 20, 14], [1, 11, 5, 14]],
        "labels": [0, 1, 0],
        # pycocotools, as CVAT's mask export, fills a polygon up to its right and lower edges (not past them)
        "masks": [region(2, 8, 2, 10), region(9, 14, 14, 20), holed],
    }


def labelme_folder(root: Path, n: int = 10, extra: dict[int, str] | None = None) -> list[str]:
    """One folder ``root/images`` + ``root/annotations`` of ``n`` images, each with a car; image ``i`` also holds
    an object of class ``extra.get(i)``. Returns the stems."""
    extra = extra if extra is not None else {3: "person", 7: "person", 5: "bike"}
    stems = []
    for i in range(n):
        stem = f"img{i:03d}"
        image(root / "images" / f"{stem}.png", i)
        shapes = [{"label": "car", "shape_type": "rectangle", "points": [[1 + i % 5, 1], [8 + i % 5, 7]]}]
        if i in extra:
            shapes.append({"label": extra[i], "shape_type": "polygon", "points": [[12, 8], [20, 8], [16, 14]]})
        write_json(root / "annotations" / f"{stem}.json", {"shapes": shapes, "imageWidth": W, "imageHeight": H})
        stems.append(stem)
    return stems
