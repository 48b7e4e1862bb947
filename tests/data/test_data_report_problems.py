"""`vitdense data` never hides what it found: classes with no training pixels are said as such (never counted as
">= 1%"), the problem list is printed even when no split can be read, multi-band folders get their contact sheet, and
RasterSegmentationDataModule's scenes are reported, counted window by window."""

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.data.label_fixtures import write_color_splits
from vitdense.cli.entry import main
from vitdense.data import SegmentationFolderDataModule
from vitdense.data.recipe_rules import class_weight_rule
from vitdense.data.report import summarize


def config(tmp_path: Path, data_class: str, **init_args) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"data": {"class_path": data_class, "init_args": init_args}}))
    return path


def test_classes_without_training_pixels_are_said_never_counted_as_a_fair_share(tmp_path: Path) -> None:
    """21 classes of which 15 hold no training pixel (a VOC-style table over a 6-class export)."""
    names = [f"c{i}" for i in range(21)]
    pixels = np.zeros(21, np.int64)
    pixels[:6] = [5000, 2000, 1000, 800, 700, 500]
    choice = class_weight_rule(pixels, names)
    assert choice.value is None
    assert "every class" not in choice.reason, choice.reason
    assert choice.reason.startswith(
        "15 of 21 classes have no training pixels (c6, c7, c8, c9, c10, c11, c12, c13, ...)"
    )
    assert "the 6 other class(es) each hold >= 1% of the training pixels (rarest: c5 5%)" in choice.reason
    rare = class_weight_rule(np.array([9000, 950, 50, 0]), ["soil", "weed", "crop", "rock"])
    assert rare.value == "sqrt_median_frequency" and rare.reason.endswith(
        "; 1 of 4 classes have no training pixels (rock)"
    )
    # the data report prints the same (a fit prints choice.reason too)
    root = tmp_path / "data"
    write_color_splits(root)
    table = (root / "classes.txt").read_text() + "3 boat 1,2,3\n"  # a class no mask holds
    (root / "classes.txt").write_text(table)
    text = summarize(SegmentationFolderDataModule(str(root), crop_size=16)).table()
    assert "1 of 4 classes have no training pixels (boat)" in text and "every class" not in text, text


def test_no_readable_split_prints_every_problem_then_one_error(tmp_path: Path, monkeypatch, capsys) -> None:
    root = tmp_path / "export"
    root.mkdir()
    (root / "classes.txt").write_text("a\nb\n")
    (root / "annotations").mkdir()  # an export unzipped one level too deep, say: nothing vitdense can pair
    cfg = config(tmp_path, "SegmentationFolderDataModule", root=str(root))
    monkeypatch.setattr(sys, "argv", ["vitdense", "data", "--config", str(cfg), "--output", str(tmp_path / "look")])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    assert exited.value.code == 2
    assert "problems: 2:" in out and "  - train: " in out and "  - val: " in out, out
    assert str(root / "train") in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: No split of the data could be read (2 problem(s), listed above and in "), last
    assert "Traceback" not in out + err
    assert (tmp_path / "look" / "report.txt").read_text().count("  - ") == 2


def test_multi_band_folders_get_their_report_and_contact_sheet(tmp_path: Path) -> None:
    pytest.importorskip("rasterio")
    from tests.data.test_multiband import write_raster_dataset

    root = write_raster_dataset(tmp_path / "data", bands=5, nodata=0)
    cfg = config(tmp_path, "SegmentationFolderDataModule", root=str(root), bands=[3, 1, 0, 2, 4], crop_size=32)
    look, out = tmp_path / "look", tmp_path / "out"
    text = main(["data", "--config", str(cfg), "--output", str(look), "--write", str(out)])
    assert "problems: 0" in text and "train: 2 images" in text
    sheet = np.asarray(Image.open(look / "contact_sheet.png").convert("RGB"))
    assert sheet.shape == (2 * 160, 8 * 160, 3) and sheet[:120, :160].std() > 20  # the bands, stretched
    # --write: the pixels without data in band 1 of the first image (its 6 x 8 corner) are void, as in training
    written = np.asarray(Image.open(out / "train" / "masks" / "0.png"))
    assert (written[:6, :8] == 255).all() and (written[6:] != 255).all()


def test_raster_scenes_are_reported_window_by_window(tmp_path: Path) -> None:
    pytest.importorskip("rasterio")
    from tests.data.test_raster_windows import write_scenes

    root = write_scenes(tmp_path / "scenes", sizes=((30, 40), (20, 25)), bands=4)
    cfg = config(tmp_path, "RasterSegmentationDataModule", root=str(root), crop_size=16)
    text = main(["data", "--config", str(cfg), "--output", str(tmp_path / "look")])
    assert "train: 2 images; sizes (w x h): 40x30 (1), 25x20 (1)" in text and "problems: 0" in text, text
    expected = np.zeros(3, np.int64)
    for h, w in ((30, 40), (20, 25)):
        ids = (np.arange(w)[None].repeat(h, 0) * 3 // w)[5:, :]  # rows 0-4 of columns 0-6 have no data: void
        expected += np.bincount(ids.ravel(), minlength=3)
        expected += np.bincount((np.arange(w)[None].repeat(5, 0) * 3 // w)[:, 7:].ravel(), minlength=3)
    from vitdense.data import RasterSegmentationDataModule

    report = summarize(RasterSegmentationDataModule(str(root), crop_size=16))
    assert report.splits[0].pixels.tolist() == expected.tolist()
    assert (tmp_path / "look" / "contact_sheet.png").is_file()
