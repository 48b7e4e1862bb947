"""LabelMe as exported: labelme's own ``labels.txt`` in labelme2voc's convention, the area no shape covers, ``group_id``
instances (labelme2coco's rule), ``point`` / line shapes skipped and counted, JSON saved beside its image.

The default tests write small files the way labelme 5 saves them. The acceptance tests (slow) read labelme's own
semantic and instance examples from the fetched mirror (GPL-3.0, so never committed here) and compare with the outputs
labelme's converters committed beside them: ``SegmentationClassNpy`` (labelme2voc) and ``annotations.json``
(labelme2coco). They skip when the mirror is absent.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.data.label_fixtures import image
from vitdense.data import SegmentationFolderDataModule
from vitdense.data.formats.objects import read_objects

W, H = 24, 16
LABELS_TXT = "__ignore__\n_background_\ncat\ndog\n"  # as labelme's examples/*/labels.txt


def shape(label: str, points: list, kind: str = "rectangle", group_id: int | None = None) -> dict:
    """One shape as labelme 5 writes it."""
    return {"label": label, "points": points, "group_id": group_id, "description": "", "shape_type": kind,
            "flags": {}, "mask": None}  # fmt: skip


def save(folder: Path, stem: str, shapes: list[dict], seed: int = 0) -> None:
    """``stem.jpg`` and ``stem.json`` side by side, as labelme saves them (imageData null, imagePath the name)."""
    image(folder / f"{stem}.jpg", seed, (W, H))
    data = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": f"{stem}.jpg", "imageData": None,
            "imageHeight": H, "imageWidth": W}  # fmt: skip
    (folder / f"{stem}.json").write_text(json.dumps(data, indent=2))


def scene() -> tuple[list[dict], np.ndarray]:
    """A cat, a dog, an __ignore__ region and a point; the mask labelme2voc makes of them with LABELS_TXT."""
    shapes = [
        shape("cat", [[2, 2], [9, 7]]),
        shape("dog", [[12, 4], [20, 12]]),
        shape("__ignore__", [[0, 13], [3, 15]]),
        shape("dog", [[22, 1]], "point"),
    ]
    expected = np.zeros((H, W), np.int64)
    expected[2:8, 2:10] = 1
    expected[4:13, 12:21] = 2
    expected[13:16, 0:4] = 255
    return shapes, expected


def all_masks(dm: SegmentationFolderDataModule) -> dict[str, np.ndarray]:
    reader = dm.reader(dm.root)
    return {image_path.stem: reader.read(key) for image_path, key in reader.pairs()}


@pytest.mark.parametrize("where", ["labels.txt", "classes.txt", "class_table"])
def test_labels_txt_in_labelme2voc_convention(tmp_path: Path, where: str) -> None:
    """labelme's labels.txt at the root, renamed classes.txt, or named by data.class_table: __ignore__ is void,
    _background_ class 0 (and the area no shape covers), cat 1, dog 2 - not every id shifted by one."""
    shapes, expected = scene()
    root = tmp_path / "export"
    for stem in ("a", "b"):
        save(root, stem, shapes)
    table = tmp_path / "labels.txt" if where == "class_table" else root / where
    table.write_text(LABELS_TXT)
    dm = SegmentationFolderDataModule(str(root), class_table=str(table) if where == "class_table" else None)
    assert dm.class_names == ["_background_", "cat", "dog"] and dm.num_classes == 3
    assert "labelme2voc's convention" in dm.table.source  # printed in fit's first line
    masks = all_masks(dm)
    assert sorted(masks) == ["a", "b"]
    np.testing.assert_array_equal(masks["a"], expected)


def test_labelme_layout_with_annotations_folder(tmp_path: Path) -> None:
    """The classes.txt that is labelme's labels.txt, with images/ + annotations/: ids as labelme2voc gives them."""
    shapes, expected = scene()
    save(tmp_path / "images", "a", shapes[:3])
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images" / "a.json").rename(tmp_path / "annotations" / "a.json")
    (tmp_path / "classes.txt").write_text(LABELS_TXT)
    np.testing.assert_array_equal(all_masks(SegmentationFolderDataModule(str(tmp_path)))["a"], expected)


def test_labels_txt_must_start_as_labelme_writes_it(tmp_path: Path) -> None:
    save(tmp_path, "a", scene()[0])
    (tmp_path / "labels.txt").write_text("__ignore__\ncat\ndog\n")
    with pytest.raises(ValueError, match=r"labels\.txt' starts with \['cat', 'dog'\].*`__ignore__`, `_background_`"):
        SegmentationFolderDataModule(str(tmp_path))


def test_unlabelled_area_is_never_silently_void(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No class for the area no shape covers: an error with the fix; background: null makes it void, said."""
    shapes, expected = scene()
    save(tmp_path, "a", shapes)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(ValueError, match=r"leave the area no shape covers unlabelled.*'_background_'.*null"):
        SegmentationFolderDataModule(str(tmp_path)).reader(tmp_path)
    dm = SegmentationFolderDataModule(str(tmp_path), polygons={"background": None})
    with caplog.at_level("INFO"):
        mask = all_masks(dm)["a"]
    void = expected.copy()
    void[expected == 0] = 255
    void[expected > 0] -= 1
    void[expected == 255] = 255
    np.testing.assert_array_equal(mask, void)
    assert "the area no shape covers -> void (255, data.polygons.background: null)" in caplog.text
    assert "skipped 1 point shape(s)" in caplog.text


def test_background_named_by_labelme_without_ignore_line(tmp_path: Path) -> None:
    """A table whose class 0 is _background_ gives it the area no shape covers (labelme2voc's rule)."""
    shapes, expected = scene()
    save(tmp_path, "a", shapes)
    (tmp_path / "classes.txt").write_text("_background_\ncat\ndog\n")
    dm = SegmentationFolderDataModule(str(tmp_path))
    np.testing.assert_array_equal(all_masks(dm)["a"], expected)
    assert dm.reader(tmp_path).notes[0] == "the area no shape covers -> class 0 '_background_', labelme2voc's rule"


def test_group_id_makes_one_object_and_points_lines_are_skipped(tmp_path: Path) -> None:
    """Shapes of one label with one group_id in an image are one object, as labelme2coco makes them; a shape without
    a group_id is an object of its own; points and lines enclose no object and are skipped, not refused."""
    shapes = [
        shape("person", [[1, 1], [5, 5]], group_id=0),
        shape("person", [[8, 8], [12, 12]], group_id=0),
        shape("person", [[14, 1], [18, 5]]),
        shape("cat", [[20, 10], [22, 14]], group_id=0),  # same group_id, other label: another object
        shape("person", [[2, 10], [6, 14]], group_id=1),
        shape("__ignore__", [[0, 0], [1, 1]]),
        shape("person", [[10, 2]], "point"),
        shape("person", [[1, 15], [9, 15]], "line"),
        shape("cat", [[3, 3], [6, 6], [9, 3]], "linestrip"),
    ]
    save(tmp_path / "a", "a", shapes)
    (record,) = read_objects("labelme", tmp_path / "a", tmp_path / "a", ["cat", "person"], masks=True)
    assert record.labels.tolist() == [1, 1, 0, 1]  # labelme2coco: (person, 0), (person, -), (cat, 0), (person, 1)
    np.testing.assert_array_equal(record.boxes[0], [1, 1, 12, 12])
    union = record.segmentations[0]()
    assert union.sum() == 2 * 25 and union[1:6, 1:6].all() and union[8:13, 8:13].all()


# Acceptance: labelme's own examples, from the fetched mirror.
MIRROR = Path("/work/.mirror/wkentaro+labelme/repo")


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(MIRROR), *args], check=True, capture_output=True).stdout


def _example(tmp_path: Path, example: str) -> Path:
    """``examples/<example>`` as in labelme's repository, unpacked under ``tmp_path``."""
    if not (MIRROR / "HEAD").is_file():
        pytest.skip(f"labelme's repository is not fetched at {MIRROR}")
    (tmp_path / "archive.tar").write_bytes(_git("archive", "HEAD", f"examples/{example}"))
    subprocess.run(["tar", "-xf", "archive.tar"], cwd=tmp_path, check=True)
    return tmp_path / "examples" / example


@pytest.mark.slow
@pytest.mark.parametrize("example", ["semantic_segmentation", "instance_segmentation"])
def test_labelme_examples_equal_labelme2voc(tmp_path: Path, example: str) -> None:
    """data_annotated/ as labelme saved it, with the example's labels.txt at the root: the masks vitdense trains on
    equal labelme2voc's committed SegmentationClassNpy (-1 there is void here) at <= 0.1% of the pixels."""
    folder = _example(tmp_path, example)
    root = folder / "data_annotated"
    (root / "labels.txt").write_text((folder / "labels.txt").read_text())
    dm = SegmentationFolderDataModule(str(root), val_fraction=0.34)
    assert dm.class_names == (folder / "data_dataset_voc" / "class_names.txt").read_text().split("\n")
    masks = all_masks(dm)
    assert len(masks) == 3
    for stem, mask in masks.items():
        voc = np.load(folder / "data_dataset_voc" / "SegmentationClassNpy" / f"{stem}.npy")
        expected = np.where(voc == -1, 255, voc)
        assert (mask != expected).mean() <= 0.001, stem
        assert (voc == -1).any() == (mask == 255).any()


@pytest.mark.slow
def test_labelme_instance_example_equals_labelme2coco(tmp_path: Path) -> None:
    """Objects per image (and their classes) equal labelme2coco's committed annotations.json."""
    from vitdense.data import CocoInstanceDataModule

    folder = _example(tmp_path, "instance_segmentation")
    coco = json.loads((folder / "data_dataset_coco" / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    expected = {Path(i["file_name"]).stem: Counter() for i in coco["images"]}
    stems = {i["id"]: Path(i["file_name"]).stem for i in coco["images"]}
    for ann in coco["annotations"]:
        expected[stems[ann["image_id"]]][names[ann["category_id"]]] += 1
    dm = CocoInstanceDataModule(str(folder / "data_annotated"), val_fraction=0.34)
    records = {path.stem: record for path, record in dm.split_samples()["train"] + dm.split_samples()["val"]}
    found = {stem: Counter(dm.class_names[k] for k in record.labels.tolist()) for stem, record in records.items()}
    assert found == expected


@pytest.mark.slow
def test_labelme_semantic_example_trains_one_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """configs/segmentation_folder.yaml with only data keys changed, data.root at labelme's data_annotated/ with its
    labels.txt: one fit step; fit's first lines state the convention."""
    from tests.cli.test_cli_labels import config, fit

    folder = _example(tmp_path, "semantic_segmentation")
    root = folder / "data_annotated"
    (root / "labels.txt").write_text((folder / "labels.txt").read_text())
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO"):
        cli = fit(config(tmp_path, root=str(root), val_fraction=0.34), tmp_path, "--trainer.fast_dev_run", "true")
    assert cli.model.class_names[:3] == ["_background_", "aeroplane", "bicycle"] and len(cli.model.class_names) == 21
    assert "val/mIoU" in cli.trainer.callback_metrics
    assert "labelme2voc's convention: __ignore__ -> void (255), _background_ = class 0" in caplog.text
    assert "the area no shape covers -> class 0 '_background_', labelme2voc's rule" in caplog.text


def test_vitdense_data_states_the_convention(tmp_path: Path) -> None:
    """`vitdense data` says which convention set the class ids (its report starts with the class table's source)."""
    from tests.cli.test_cli_labels import config
    from vitdense.cli.commands import data_main

    for stem in ("a", "b", "c"):
        save(tmp_path / "export", stem, scene()[0])
    (tmp_path / "export" / "labels.txt").write_text(LABELS_TXT)
    cfg = config(tmp_path, root=str(tmp_path / "export"), val_fraction=0.34)
    text = data_main(["--config", str(cfg), "--output", str(tmp_path / "report")])
    assert text.startswith("classes: 3 from ") and "labelme2voc's convention: __ignore__ -> void (255)" in text
    assert "problems: 0" in text
