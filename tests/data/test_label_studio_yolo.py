"""Label Studio JSON and YOLO / Ultralytics exports read as the tools' own converters read them: masks and boxes equal
the ones committed beside the fixtures (made by label-studio-converter and by ultralytics' polygon rule), the
conventions said, and every bad input one error naming the file and the value."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.data.label_fixtures import image, write_json
from vitdense.data import CocoDetectionDataModule, CocoInstanceDataModule, SegmentationFolderDataModule
from vitdense.data.formats import polygons
from vitdense.data.formats.label_studio import decode_rle, image_names
from vitdense.data.formats.masks import detect_format

EXPORTS = Path(__file__).parents[1] / "fixtures" / "exports"
LS_JSON = "project-1-at-2025-01-01-00-00-5e3c2a1b.json"


@pytest.fixture
def ls_root(tmp_path: Path) -> Path:
    shutil.copytree(
        EXPORTS / "label_studio", tmp_path / "ls", ignore=shutil.ignore_patterns("expected", "*.py", "*.md")
    )
    return tmp_path / "ls"


def expected(tool: str, stem: str) -> np.ndarray:
    return np.load(EXPORTS / tool / "expected" / f"{stem}.npy").astype(np.int64)


@pytest.fixture
def said(caplog, monkeypatch) -> pytest.LogCaptureFixture:
    """The [vitdense] lines, each said afresh in this test."""
    monkeypatch.setattr(polygons, "_SAID", set())  # the once-per-process lines of every reader
    caplog.set_level("INFO")
    return caplog


def test_label_studio_masks_equal_label_studio_converter(ls_root: Path, said) -> None:
    dm = SegmentationFolderDataModule(str(ls_root), crop_size=16, batch_size=1)
    assert dm.class_names == ["background", "car", "person", "road"]
    reader = dm.reader(ls_root)
    assert [p.name for p, _ in reader.pairs()] == ["field.png", "street.png"]  # the unannotated task is skipped
    for path, key in reader.pairs():
        np.testing.assert_array_equal(reader.read(key), expected("label_studio", path.stem))
    assert "background = class 0" in said.text and "skipped 1 keypoint(s), 1 task(s) without" in said.text


@pytest.mark.parametrize("module", [CocoDetectionDataModule, CocoInstanceDataModule])
def test_label_studio_boxes_equal_the_converters_coco(ls_root: Path, module) -> None:
    dm = module(str(ls_root), image_size=32, batch_size=1, val_fraction=0.5)
    assert dm.class_names == ["car", "person", "road"]
    boxes = json.loads((EXPORTS / "label_studio" / "expected" / "boxes.json").read_text())
    records = {r.path.name: r for split in ("train", "val") for r in dm.dataset(split).records}
    assert sorted(records) == ["field.png", "street.png"]
    for name, record in records.items():
        np.testing.assert_allclose(record.boxes, boxes[name]["boxes"], atol=1e-6)
        assert record.labels.tolist() == boxes[name]["labels"]
    item = dm.dataset("train")[0]
    assert ("masks" in item["target"]) == (module is CocoInstanceDataModule)


def test_brush_rle_decodes_as_the_converter() -> None:
    # 8 values, 8-bit words, run-length sizes 3/4/8/16: a repeat run of 3 x 255, then a literal run of 5 values
    bits = f"{8:032b}{7:05b}" + "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))
    bits += (
        "1" + "00" + f"{2:03b}" + f"{255:08b}" + "0" + "00" + f"{4:03b}" + "".join(f"{v:08b}" for v in (1, 2, 0, 9, 7))
    )
    bits += "0" * (-len(bits) % 8)
    rle = [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
    assert decode_rle(rle).tolist() == [255, 255, 255, 1, 2, 0, 9, 7]


@pytest.mark.parametrize(
    ("ref", "names"),
    [
        ("/data/upload/3/0a1b2c3d-street.png", ["0a1b2c3d-street.png", "street.png"]),
        ("/data/local-files/?d=photos/day%201/a.jpg", ["photos/day 1/a.jpg", "a.jpg"]),
        ("s3://bucket/set/b.png", ["b.png"]),
        ("http://host:8080/data/c.JPG", ["c.JPG"]),
    ],
)
def test_label_studio_image_paths_resolve_by_a_stated_rule(ref: str, names: list[str]) -> None:
    assert image_names(ref) == names


def test_yolo_masks_follow_ultralytics_with_background_added(said) -> None:
    dm = SegmentationFolderDataModule(str(EXPORTS / "yolo"), crop_size=16, batch_size=1)
    assert dm.class_names == ["background", "cat", "dog", "ball"]
    dm.setup("fit")
    for split, stems in (("train", ["a", "b", "c"]), ("val", ["d"])):
        ds = dm.dataset(split)
        assert [p.stem for p, _ in ds.samples] == stems
        for path, key in ds.samples:
            np.testing.assert_array_equal(ds.load_mask(key), expected("yolo", path.stem))
    assert "YOLO class k is class k + 1" in said.text and "1 repeated line(s) dropped, 1 no label file" in said.text


def test_yolo_boxes_are_the_polygons_extents() -> None:
    dm = CocoDetectionDataModule(str(EXPORTS / "yolo"), image_size=32, batch_size=1)
    assert dm.class_names == ["cat", "dog", "ball"]
    boxes = json.loads((EXPORTS / "yolo" / "expected" / "boxes.json").read_text())
    for split in ("train", "val"):
        for record in dm.dataset(split).records:
            want = np.reshape(boxes[record.path.stem]["boxes"], (-1, 4))
            np.testing.assert_allclose(record.boxes.reshape(-1, 4), want, atol=1e-4)
            assert record.labels.tolist() == boxes[record.path.stem]["labels"]


def roboflow(root: Path, lines: dict[str, str], yaml_text: str | None = None) -> Path:
    """A Roboflow-style YOLO export: data.yaml with ``../train/images``, folders train/ and valid/."""
    for split, stem in (("train", "a"), ("valid", "b")):
        image(root / split / "images" / f"{stem}.jpg", 0, (20, 10))
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        (root / split / "labels" / f"{stem}.txt").write_text(lines.get(stem, "0 0.5 0.5 0.5 0.4\n"))
    text = "train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['car', 'person']\n"
    (root / "data.yaml").write_text(yaml_text if yaml_text is not None else text)
    return root


def test_yolo_roboflow_boxes(tmp_path: Path) -> None:
    root = roboflow(tmp_path / "rf", {"a": "1 0.5 0.5 0.5 0.4\n0 0.25 0.25 0.5 0.5\n"})
    dm = CocoDetectionDataModule(str(root), image_size=32, batch_size=1)
    record = dm.dataset("train").records[0]
    np.testing.assert_allclose(record.boxes, [[5, 3, 15, 7], [0, 0, 10, 5]])
    assert record.labels.tolist() == [1, 0] and len(dm.dataset("val").records) == 1


YOLO_BAD = [
    ({"a": "0 0.5 0.5 0.5\n"}, None, "a.txt' line 1 has 4 values"),
    ({"a": "2 0.5 0.5 0.5 0.4\n"}, None, "a.txt' line 1 has the class 2"),
    ({"a": "0 0.5 0.5 1.5 0.4\n"}, None, "a.txt' line 1 has coordinates 0.4..1.5"),
    ({"a": "0 x 0.5 0.5 0.4\n"}, None, "a.txt' line 1: '0 x 0.5 0.5 0.4' is not numbers"),
    ({"a": "1.5 0.5 0.5 0.5 0.4\n"}, None, "a.txt' line 1 has the class 1.5"),
    ({"a": "0 0.5 0.5 0 0.4\n"}, None, "a.txt' line 1: its box has width 0"),
    ({}, "train: ../train/images\nnames: [car, person]\n", "data.yaml' has no 'val:' entry"),
    ({}, "train: ../train/images\nval: ../nowhere\nnames: [car, person]\n", "val: '../nowhere' is not found"),
    ({}, "train: ../train/images\nval: ../valid/images\nnames: [car]\nnc: 2\n", "data.yaml' has nc: 2 but names"),
    ({}, "train: ../train/images\nval: ../valid/images\nnames: {0: car, 2: person}\n", "names the class ids [0, 2]"),
    ({}, "train: [../train/images\nnames: [a]\n", "data.yaml' is not valid YAML"),
]


@pytest.mark.parametrize(("lines", "yaml_text", "message"), YOLO_BAD)
def test_bad_yolo_exports_name_file_and_value(tmp_path: Path, lines: dict, yaml_text: str | None, message: str) -> None:
    root = roboflow(tmp_path / "rf", lines, yaml_text)
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        CocoDetectionDataModule(str(root), image_size=32, batch_size=1).setup("fit")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_yolo_box_lines_are_refused_for_masks(tmp_path: Path) -> None:
    root = roboflow(tmp_path / "rf", {})
    with pytest.raises(ValueError, match=r"a.txt' line 1 is a box .* no outline for a segmentation mask"):
        SegmentationFolderDataModule(str(root), crop_size=8, batch_size=1).setup("fit")
    with pytest.raises(ValueError, match=r"a.txt' line 1 is a box .* no outline for an instance mask"):
        CocoInstanceDataModule(str(root), image_size=32, batch_size=1).setup("fit")


def task(n: int, ref: str, results: list, **annotation) -> dict:
    return {"id": n, "data": {"image": ref}, "annotations": [{"id": 10 * n, "result": results, **annotation}]}


def poly(label, points=((10, 10), (60, 10), (40, 80)), **extra) -> dict:
    value = {"points": [list(p) for p in points], "polygonlabels": label if isinstance(label, list) else [label]}
    return {"type": "polygonlabels", "original_width": 20, "original_height": 10, "value": value, **extra}


LS_BAD = [
    (
        [task(1, "/data/upload/1/0a1b2c3d-nowhere.png", [])],
        "data.image '/data/upload/1/0a1b2c3d-nowhere.png' matches no",
    ),
    ([task(1, "a.png", [poly("cat")])], "task 1 result 0 (polygonlabels) has the label 'cat'"),
    ([task(1, "a.png", [poly(["car", "car2"])])], "has the labels ['car', 'car2']; each region needs exactly one"),
    ([task(1, "a.png", [poly("car", ((10, 10), (160, 10), (40, 80)))])], "reaches x 2.0..32.0"),
    ([task(1, "a.png", [poly("car", ((10, 10), (20, 20), (30, 30)))])], "is degenerate"),
    (
        [
            task(
                1,
                "a.png",
                [
                    {
                        "type": "brushlabels",
                        "original_width": 20,
                        "original_height": 10,
                        "value": {"format": "rle", "rle": [0, 0, 0, 9, 1], "brushlabels": ["car"]},
                    }
                ],
            )
        ],
        "its rle holds 9 values, but a 20x10 RGBA brush layer has 800",
    ),
    (
        [
            task(
                1,
                "a.png",
                [
                    {
                        "type": "rectanglelabels",
                        "original_width": 20,
                        "original_height": 10,
                        "value": {"x": "left", "y": 0, "width": 5, "height": 5, "rectanglelabels": ["car"]},
                    }
                ],
            )
        ],
        "a rectangle needs numbers x, y, width, height",
    ),
    (
        [{"id": 1, "data": {"image": "a.png"}, "annotations": [{"id": 5, "result": []}, {"id": 6, "result": []}]}],
        "task 1 has 2 annotations (ids 5, 6) and 0 marked ground truth",
    ),
    ([task(1, "a.png", []), task(2, "/data/upload/2/a.png", [])], "task 2 names the image"),
    ([{"id": 1, "image": "a.png"}], "task 1 has no 'data' object"),
]


@pytest.mark.parametrize(("tasks", "message"), LS_BAD)
def test_bad_label_studio_exports_name_file_and_value(tmp_path: Path, tasks: list, message: str) -> None:
    image(tmp_path / "images" / "a.png", 0, (20, 10))
    write_json(tmp_path / "export.json", tasks)
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        SegmentationFolderDataModule(str(tmp_path), classes=[{"name": "background"}, {"name": "car"}]).reader(tmp_path)
    assert message in str(err.value) and "export.json" in str(err.value) and "\n" not in str(err.value)


def test_formats_are_found_by_their_files_and_forceable(ls_root: Path) -> None:
    assert detect_format(ls_root, "auto") == "label_studio"
    assert detect_format(EXPORTS / "yolo", "auto") == "yolo"
    dm = SegmentationFolderDataModule(str(ls_root), annotations="label_studio", crop_size=16, batch_size=1)
    assert len(dm.reader(ls_root).pairs()) == 2
    with pytest.raises(FileNotFoundError, match=r"annotations: yolo, but .* has no data.yaml"):
        SegmentationFolderDataModule(str(ls_root), annotations="yolo", class_names=["a", "b"]).reader(ls_root)


def test_yolo_export_trains_one_step_through_the_cli(tmp_path: Path) -> None:
    from tests.cli.test_cli_labels import config, fit

    root = tmp_path / "yolo"
    shutil.copytree(EXPORTS / "yolo", root, ignore=shutil.ignore_patterns("expected", "*.py", "*.md"))
    before = sorted((p.relative_to(root), p.stat().st_mtime) for p in root.rglob("*"))
    cli = fit(config(tmp_path, root=str(root)), tmp_path, "--trainer.fast_dev_run", "true")
    assert cli.model.num_classes == 4 and cli.model.class_names == ["background", "cat", "dog", "ball"]
    assert "val/mIoU" in cli.trainer.callback_metrics
    assert sorted((p.relative_to(root), p.stat().st_mtime) for p in root.rglob("*")) == before
