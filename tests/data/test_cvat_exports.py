"""CVAT exports read as CVAT writes them: datumaro's own CVAT for images 1.1 assets (a project export with its subsets
as splits, a task export), polylines and points skipped and counted, and bad exports named in one line.

Expected annotations are datumaro's (``EXPECTED_IMAGE_DATASETS`` of its ``tests/unit/test_cvat_format.py``, see
``tests/fixtures/exports/cvat/SOURCE.md``); expected masks are those annotations drawn as CVAT's Segmentation mask
export draws them (pycocotools polygons, ``background`` class 0), never vitdense's output.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from vitdense.data import CocoDetectionDataModule, SegmentationFolderDataModule

EXPORTS = Path(__file__).parents[1] / "fixtures" / "exports" / "cvat"
PROJECT, TASK = EXPORTS / "export_project", EXPORTS / "export_task"

# datumaro's expected annotations of both images (label1 = 0, label2 = 1 in datumaro's categories)
BOX = (0, 2, 4, 2)  # Bbox(x, y, w, h), label1, in img0 (8x8); a PolyLine of label2 there too
POLYGON = [1, 2, 3, 4, 6, 5]  # Polygon, label1, in img1 (10x10); Points of label2 there too


def coco_fill(points: list[float], height: int, width: int) -> np.ndarray:
    """A polygon as CVAT's mask export (datumaro's ``polygons_to_masks``) fills it: through pycocotools."""
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([points], height, width))).astype(bool)


def expected_masks(polygon_labelled: bool = True) -> dict[str, np.ndarray]:
    """Semantic masks of img0 / img1: background 0, label1 1 (CVAT's colormap puts background first)."""
    x, y, w, h = BOX
    img0 = coco_fill([x, y, x + w, y, x + w, y + h, x, y + h], 8, 8).astype(np.int64)
    img1 = coco_fill(POLYGON, 10, 10).astype(np.int64) if polygon_labelled else np.zeros((10, 10), np.int64)
    return {"img0": img0, "img1": img1}


def masks_of(dm: SegmentationFolderDataModule, split: str) -> dict[str, np.ndarray]:
    ds = dm.dataset(split)
    return {image.stem: ds.load_mask(key) for image, key in ds.samples}


def test_project_export_subsets_are_splits() -> None:
    dm = SegmentationFolderDataModule(str(PROJECT))
    assert dm.class_names == ["background", "label1", "label2"]
    for split, subset in (("train", "Train"), ("val", "Validation"), ("test", "Test")):
        ds = dm.dataset(split)
        assert sorted(p.relative_to(PROJECT).as_posix() for p, _ in ds.samples) == [
            f"images/{subset}/img0.jpg", f"images/{subset}/img1.jpg"
        ]  # fmt: skip
        got = masks_of(dm, split)
        for stem, expected in expected_masks().items():
            np.testing.assert_array_equal(got[stem], expected, err_msg=f"{split} {stem}")
        note = ds.reader.note
        assert f"(subsets {subset})" in note and "skipped 1 points, 1 polyline" in note and "-> background" in note


def test_project_export_boxes_for_detection() -> None:
    dm = CocoDetectionDataModule(str(PROJECT))
    assert dm.class_names == ["label1", "label2"]  # CVAT's labels; detection has no background class
    for split, subset in (("train", "Train"), ("val", "Validation"), ("test", "Test")):
        records = {r.path.stem: r for r in dm.dataset(split).records}
        assert sorted(records) == ["img0", "img1"] and {r.path.parent.name for r in records.values()} == {subset}
        x, y, w, h = BOX
        np.testing.assert_allclose(records["img0"].boxes, [[x, y, x + w, y + h]])
        np.testing.assert_allclose(records["img1"].boxes, [[1, 2, 6, 5]])  # the polygon's extent
        assert records["img0"].labels.tolist() == [0] and records["img1"].labels.tolist() == [0]


def test_task_export_boxes_for_detection() -> None:
    dm = CocoDetectionDataModule(str(TASK), val_fraction=0.5)  # one folder: split by val_fraction and seed
    records = {r.path.stem: r for split in ("train", "val") for r in dm.dataset(split).records}
    x, y, w, h = BOX
    np.testing.assert_allclose(records["img0"].boxes, [[x, y, x + w, y + h]])
    assert len(records["img1"].boxes) == 0  # its polygon has no label, its points no area


def test_task_export_named_by_its_subset_and_unlabelled_shapes_skipped() -> None:
    dm = SegmentationFolderDataModule(str(TASK), val_fraction=0.5)  # train.xml: found by its <annotations> root
    assert dm.class_names == ["background", "label1", "label2"]
    got = {**masks_of(dm, "train"), **masks_of(dm, "val")}
    for stem, expected in expected_masks(polygon_labelled=False).items():  # img1's polygon has label=""
        np.testing.assert_array_equal(got[stem], expected, err_msg=stem)
    note = dm.reader(TASK).note  # type: ignore[attr-defined]
    assert "skipped 1 points, 1 polyline, 1 shape(s) with no label" in note


def cvat_project(root: Path, subsets: tuple[str, ...] = ("Train", "Validation"), shapes: str = "") -> Path:
    """A two-image CVAT project export written as CVAT writes one (16x12 images in images/<subset>/)."""
    images = []
    for i, subset in enumerate(subsets):
        folder = root / "images" / subset
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 12), (i * 40, 90, 60)).save(folder / f"f{i}.png")
        images.append(f'<image id="{i}" name="f{i}.png" subset="{subset}" width="16" height="12">{shapes}</image>')
    (root / "annotations.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version><meta><project><labels>'
        "<label><name>road</name><color>#804080</color></label></labels></project></meta>" + "".join(images)
        + "</annotations>"
    )  # fmt: skip
    return root


def test_polyline_and_points_with_a_width_are_drawn(tmp_path: Path) -> None:
    shapes = (
        '<polyline label="road" points="2,5;13,5" z_order="0"><attribute name="width">3</attribute></polyline>'
        '<points label="road" points="4,9" z_order="0"><attribute name="width">2</attribute></points>'
    )
    dm = SegmentationFolderDataModule(str(cvat_project(tmp_path, shapes=shapes)))
    mask = masks_of(dm, "train")["f0"]
    expected = np.zeros((12, 16), np.int64)
    expected[4:7, 2:14] = 1  # a 3-pixel line through y = 5 from x = 2 to 13
    expected[8:11, 4] = expected[9, 3:6] = 1  # a disc of diameter 2 around (4, 9): Pillow's [3, 8, 5, 10] ellipse
    np.testing.assert_array_equal(mask, expected)
    boxes = CocoDetectionDataModule(str(tmp_path)).dataset("train").records[0].boxes
    np.testing.assert_allclose(boxes, [[0.5, 3.5, 14.5, 6.5], [3, 8, 5, 10]])  # extents grown by half the width


def _bad_subset(root: Path) -> None:
    cvat_project(root, ("Train", "Batch2"))


def _no_validation(root: Path) -> None:
    cvat_project(root, ("Train", "Test"))


def _missing_image(root: Path) -> None:
    cvat_project(root)
    (root / "images" / "Train" / "f0.png").unlink()


def _video(root: Path) -> None:
    cvat_project(root)
    (root / "annotations.xml").write_text(
        "<annotations><version>1.1</version><meta><task><labels><label><name>road</name></label></labels></task>"
        '</meta><track id="0" label="road"><box frame="0" xtl="1" ytl="1" xbr="5" ybr="5"></box></track></annotations>'
    )


def _bad_width(root: Path) -> None:
    cvat_project(root, shapes='<polyline label="road" points="2,5;13,5"><attribute name="width">wide</attribute>'
                              "</polyline>")  # fmt: skip


def _two_xml(root: Path) -> None:
    shutil.copy(cvat_project(root) / "annotations.xml", root / "a.xml")
    (root / "annotations.xml").rename(root / "b.xml")


def _listed_twice(root: Path) -> None:
    cvat_project(root, ("Train", "Validation"))
    xml = (root / "annotations.xml").read_text()
    (root / "annotations.xml").write_text(xml.replace("</annotations>", xml[xml.index("<image") : xml.index("</image>")]
                                                       + "</image></annotations>"))  # fmt: skip


def _mixed_subsets(root: Path) -> None:
    cvat_project(root)
    xml = (root / "annotations.xml").read_text().replace(' subset="Validation"', "")
    (root / "annotations.xml").write_text(xml)
    (root / "images" / "Validation" / "f1.png").rename(root / "images" / "f1.png")


BAD = {
    "subset naming no split": (_bad_subset, r"annotations.xml' has the subset\(s\) \['Batch2'\], which name no split"),
    "no Validation subset": (_no_validation, r"annotations.xml' has the subsets \['Train', 'Test'\] but no Validation"),
    "image missing": (_missing_image, r"image 'f0.png' \(subset Train\) annotates the image 'f0.png', which is not in"),
    "CVAT for video export": (_video, r"annotations.xml' holds <track> elements .* 'CVAT for video 1.1' export"),
    "width not a number": (_bad_width, r"shape 0 \(polyline 'road'\): its width attribute 'wide' is not a positive"),
    "two XML files": (_two_xml, r"holds 2 CVAT XML files \(a.xml, b.xml\)"),
    "image listed twice": (_listed_twice, r"image 'f0.png' \(subset Train\) is listed twice in the file"),
    "image without a subset": (_mixed_subsets, r"annotations.xml' image 'f1.png' has no subset while others have"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("datamodule", [SegmentationFolderDataModule, CocoDetectionDataModule])
def test_bad_export_is_one_line_naming_file_and_value(case: str, datamodule: type, tmp_path: Path) -> None:
    write, message = BAD[case]
    root = tmp_path / "export"
    write(root)
    before = sorted((p.relative_to(root), p.stat().st_size) for p in root.rglob("*"))
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        datamodule(str(root)).dataset("train")
    assert "\n" not in str(err.value)
    assert sorted((p.relative_to(root), p.stat().st_size) for p in root.rglob("*")) == before


def test_missing_test_subset_is_named(tmp_path: Path) -> None:
    dm = SegmentationFolderDataModule(str(cvat_project(tmp_path)))
    assert len(dm.dataset("val")) == 1
    with pytest.raises(ValueError, match=r"The test split of .* has no subset for it \(its subsets: Train, Validat"):
        dm.dataset("test")


def test_project_export_fits_one_step_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.cli.test_cli_labels import config, fit

    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO"):
        cli = fit(config(tmp_path, root=str(PROJECT)), tmp_path, "--trainer.fast_dev_run", "true")
    assert cli.model.class_names == ["background", "label1", "label2"] and "val/mIoU" in cli.trainer.callback_metrics
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "subsets -> splits Test -> test, Train -> train, Validation -> val" in said
    assert "(subsets Train): 2 images; unlabelled pixels -> background; skipped 1 points, 1 polyline" in said


LABELMAP = [("background", (0, 0, 0)), ("road", (128, 64, 128)), ("car", (64, 0, 128))]


def cvat_mask_export(root: Path, subsets: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """A CVAT "Segmentation mask 1.1" export written as CVAT writes it (datumaro's voc_segmentation exporter with
    ``apply_colormap`` and CVAT's ``make_colormap``): ``labelmap.txt`` (background first), RGB ``SegmentationClass``
    PNGs, ``JPEGImages``, and one ``ImageSets/Segmentation/<subset>.txt`` per subset. Returns the class ids painted."""
    (root / "labelmap.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "labelmap.txt").write_text(
        "# label:color_rgb:parts:actions\n" + "".join(f"{n}:{','.join(map(str, c))}::\n" for n, c in LABELMAP)
    )
    palette = np.array([c for _, c in LABELMAP], np.uint8)
    ids = {}
    for subset, stems in subsets.items():
        lists = root / "ImageSets" / "Segmentation"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / f"{subset}.txt").write_text("".join(f"{s}\n" for s in stems))
        for i, stem in enumerate(stems):
            mask = np.zeros((12, 16), np.int64)
            mask[: 4 + i] = 1
            mask[6:10, 2 + i : 9] = 2
            ids[stem] = mask
            for folder in ("JPEGImages", "SegmentationClass"):
                (root / folder).mkdir(exist_ok=True)
            Image.new("RGB", (16, 12), (10 * i, 100, 50)).save(root / "JPEGImages" / f"{stem}.jpg")
            Image.fromarray(palette[mask]).save(root / "SegmentationClass" / f"{stem}.png")
    return ids


@pytest.mark.parametrize("project", [False, True])
def test_segmentation_mask_export(tmp_path: Path, project: bool) -> None:
    # a project's lists name its subsets; a task's is default.txt (one subset: split by val_fraction and seed)
    subsets = {"Train": ["c", "d"], "Validation": ["a", "b"]} if project else {"default": ["a", "b", "c", "d"]}
    ids = cvat_mask_export(tmp_path, subsets)
    dm = SegmentationFolderDataModule(str(tmp_path), val_fraction=0.34)
    assert dm.class_names == ["background", "road", "car"] and dm.class_colors == [c for _, c in LABELMAP]
    got = {**masks_of(dm, "train"), **masks_of(dm, "val")}
    assert sorted(got) == ["a", "b", "c", "d"]
    for stem, expected in ids.items():
        np.testing.assert_array_equal(got[stem], expected, err_msg=stem)
    if project:  # the subsets' lists are the splits (the seeded split would put 1 of 4 images in val)
        assert sorted(masks_of(dm, "train")) == ["c", "d"] and sorted(masks_of(dm, "val")) == ["a", "b"]
