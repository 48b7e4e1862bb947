"""Colour-coded masks through a class table: classes.txt with colours, CVAT's labelmap.txt, a classes: list."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.label_fixtures import COLORS, NAMES, VOID, id_mask, paint, write_color_splits
from vitdense.data import SegmentationFolderDataModule
from vitdense.data.formats.class_table import read_classes_txt


def masks_of(dm: SegmentationFolderDataModule, split: str) -> dict[str, np.ndarray]:
    ds = dm.dataset(split)
    return {image.stem: ds.load_mask(key) for image, key in ds.samples}


def test_colour_masks_through_classes_txt(tmp_path: Path) -> None:
    expected = write_color_splits(tmp_path)
    dm = SegmentationFolderDataModule(str(tmp_path), crop_size=16)
    assert dm.num_classes == 3 and dm.class_names == NAMES and dm.class_colors == COLORS
    for split in ("train", "val"):
        for stem, mask in masks_of(dm, split).items():
            np.testing.assert_array_equal(mask, expected[stem])  # void colour -> 255


def test_unknown_colour_is_an_error_naming_file_colour_and_pixels(tmp_path: Path) -> None:
    write_color_splits(tmp_path)
    bad = paint(id_mask(0))
    bad[5:7, 5:8] = (1, 2, 3)
    Image.fromarray(bad).save(tmp_path / "train" / "masks" / "train1.png")
    dm = SegmentationFolderDataModule(str(tmp_path), crop_size=16)
    with pytest.raises(ValueError, match=r"train1\.png' has 1 colour\(s\) in no class entry.*\(1,2,3\) x 6 px"):
        dm.class_pixel_counts()
    dm = SegmentationFolderDataModule(str(tmp_path), crop_size=16, unknown_colors="ignore")
    mask = masks_of(dm, "train")["train1"]
    assert (mask[5:7, 5:8] == 255).all()


def test_cvat_labelmap_and_void_class(tmp_path: Path) -> None:
    expected = write_color_splits(tmp_path)
    (tmp_path / "classes.txt").unlink()
    rows = [f"{n}:{','.join(map(str, c))}::" for n, c in zip([*NAMES, "unlabelled"], [*COLORS, VOID])]
    (tmp_path / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n" + "\n".join(rows) + "\n")
    dm = SegmentationFolderDataModule(str(tmp_path), crop_size=16, void_classes=["unlabelled"])
    assert dm.class_names == NAMES and dm.class_colors == COLORS
    np.testing.assert_array_equal(masks_of(dm, "val")["val1"], expected["val1"])


def test_classes_list_in_config_and_palette_masks(tmp_path: Path) -> None:
    expected = write_color_splits(tmp_path)
    (tmp_path / "classes.txt").unlink()
    mask_path = tmp_path / "val" / "masks" / "val0.png"  # a palette PNG whose palette holds the class colours
    ids = np.where(expected["val0"] == 255, 3, expected["val0"]).astype(np.uint8)
    pal = Image.fromarray(ids, mode="L").convert("P")
    pal.putpalette([v for c in [*COLORS, VOID] for v in c])
    pal.save(mask_path)
    classes = [{"name": n, "color": c} for n, c in zip([*NAMES, "void"], [*COLORS, VOID])]
    dm = SegmentationFolderDataModule(str(tmp_path), classes=classes, void_classes=["void"], mask_type="colors")
    assert dm.num_classes == 3 and dm.class_colors == COLORS
    np.testing.assert_array_equal(masks_of(dm, "val")["val0"], expected["val0"])


def test_classes_txt_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("0 sky 1,2,3\n1 road\n")
    with pytest.raises(ValueError, match=r"classes.txt' gives colours to some classes but not to \['road'\]"):
        read_classes_txt(path, 255)
    path.write_text("0 sky 1,2,3\n0 road 4,5,6\n")
    with pytest.raises(ValueError, match="line 2: class id 0 appears twice"):
        read_classes_txt(path, 255)
    path.write_text("0 sky 1,2,3\n1 road 1,2,3\n")
    table = read_classes_txt(path, 255)
    with pytest.raises(ValueError, match=r"colour \[1, 2, 3\] to both 'sky' and 'road'"):
        SegmentationFolderDataModule(str(tmp_path), num_classes=2).reader(tmp_path)
    assert table.colors == [(1, 2, 3), (1, 2, 3)]
