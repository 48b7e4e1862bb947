"""`vitdense data` on the real CamVid train + val (../shared/data): under 20 s, shares summing to 1, a real PNG."""

import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from vitdense.cli.entry import main

CAMVID = Path(__file__).resolve().parents[3] / "shared" / "data" / "camvid"


@pytest.mark.slow
@pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid is not here")
def test_data_report_on_camvid(tmp_path: Path) -> None:
    cfg = tmp_path / "camvid.yaml"
    data = {"class_path": "SegmentationFolderDataModule", "init_args": {"root": str(CAMVID), "ignore_index": 11}}
    cfg.write_text(yaml.safe_dump({"data": data}))
    start = time.perf_counter()
    text = main(["data", "--config", str(cfg), "--output", str(tmp_path / "look")])
    assert time.perf_counter() - start < 20
    assert "train: 367 images" in text and "val: 101 images" in text and "problems: 0" in text
    for split in ("train", "val"):
        rows = [r for r in text.split(f"{split}: ")[1].split("missing from")[0].splitlines()[2:] if r.strip()]
        assert len(rows) == 11 and abs(sum(float(r.split()[2]) for r in rows) - 1) < 1e-3
    sheet = Image.open(tmp_path / "look" / "contact_sheet.png")
    assert sheet.format == "PNG" and np.asarray(sheet).ndim == 3
