"""Image and mask reading: any PIL mode to RGB uint8, palette masks as class ids, unreadable files named."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitdense.data import load_image, load_mask


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: Image.new("L", (5, 4), 77), [77, 77, 77]),
        (lambda: Image.new("LA", (5, 4), (77, 0)), [77, 77, 77]),
        (lambda: Image.new("RGBA", (5, 4), (9, 8, 7, 0)), [9, 8, 7]),
        (lambda: Image.new("CMYK", (5, 4), (0, 0, 0, 0)), [255, 255, 255]),
        (lambda: Image.fromarray(np.full((4, 5), 0xAB00, np.uint16)), [0xAB, 0xAB, 0xAB]),
        (lambda: Image.new("I", (5, 4), 0x1200), [0x12, 0x12, 0x12]),
        (lambda: Image.new("F", (5, 4), 0.5), [128, 128, 128]),
    ],
)
def test_load_image_modes_to_rgb_uint8(tmp_path: Path, make, expected: list[int]) -> None:
    img = make()
    path = tmp_path / ("img.tif" if img.mode in ("CMYK", "I", "F") else "img.png")
    img.save(path)
    image = load_image(path)
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    assert (image == expected).all()


def test_load_palette_image_and_mask(tmp_path: Path) -> None:
    pal = Image.frombytes("P", (2, 2), bytes([0, 1, 2, 1]))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
    pal.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png")[0, 1].tolist() == [255, 0, 0]
    mask = load_mask(tmp_path / "p.png")
    assert mask.dtype == np.int64 and mask.tolist() == [[0, 1], [2, 1]]
    Image.fromarray(np.array([[300, 2]], np.uint16)).save(tmp_path / "m16.png")
    assert load_mask(tmp_path / "m16.png").tolist() == [[300, 2]]


def test_truncated_image(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"Cannot read image '.*t\.png'"):
        load_image(tmp_path / "t.png")
