"""`vitdense data`: per-split tables whose pixel shares sum to 1, every problem listed, a contact sheet in the class
colours, a new folder each time and nothing written into the data."""

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from tests.data.label_fixtures import COLORS, id_mask, paint, tree, write_color_splits
from vitdense.cli.entry import main


def test_data_report_lists_every_problem_and_draws_class_colours(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_color_splits(root, per_split=3)
    for path in root.rglob("images/*.jpg"):  # black images: the sheet shows the class colours halved
        Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(path)
    for stem in ("train1", "val2"):  # two masks with a colour in no class entry
        bad = paint(id_mask(1))
        bad[4:6, 4:6] = (7, 7, 7)
        Image.fromarray(bad).save(root / stem[:-1] / "masks" / f"{stem}.png")
    Image.fromarray(paint(id_mask(2))[:, :20]).save(root / "val" / "masks" / "val0.png")  # wrong size
    cfg = tmp_path / "seg.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"class_path": "SegmentationFolderDataModule", "init_args": {"root": "x"}},
                                   "model": {"class_path": "SegmentationTask"}}))  # fmt: skip
    before = tree(root)
    text = main(["data", "--config", str(cfg), "--data.root", str(root), "--output", str(tmp_path / "look")])
    assert "problems: 3:" in text
    assert "train1.png' has 1 colour(s) in no class entry" in text and "(7,7,7) x 4 px" in text
    assert "val2.png' has 1 colour(s)" in text and "val0.jpg' is 24x16 but" in text and "is 20x16" in text
    assert "train: 3 images; sizes (w x h): 24x16 (3)" in text and "val: 3 images" in text
    # what the template's automatic settings would choose from this train split (those a fit prints)
    assert "loss.class_weights: auto -> " in text
    assert "data.scale_range: auto -> [1.0, 2.0] (median short side 16 px, crop 512" in text
    assert "inference.keep_largest: auto -> [] (no class is one solid object in every one of >= 20" in text
    for split in ("train", "val"):
        block = [r for r in text.split(f"{split}: ")[1].split("missing from")[0].splitlines()[2:] if r.strip()]
        assert abs(sum(float(line.split()[2]) for line in block) - 1) < 1e-3
    sheet = np.asarray(Image.open(tmp_path / "look" / "contact_sheet.png").convert("RGB")).reshape(-1, 3)
    found = {tuple(c) for c in np.unique(sheet, axis=0).tolist()}
    halves = {tuple(v // 2 for v in c) for c in COLORS}
    assert halves <= found and found <= halves | {(0, 0, 0), (255, 255, 255)}
    report = (tmp_path / "look" / "report.txt").read_text()
    assert report.startswith("classes: 3 from ") and "\n\ntrain: 3 images" in report  # the table first, then splits
    main(["data", "--config", str(cfg), "--data.root", str(root), "--output", str(tmp_path / "look")])
    assert (tmp_path / "look-2" / "contact_sheet.png").is_file()  # a new folder, never overwritten
    assert tree(root) == before


def test_data_report_counts_the_run_and_says_when_warmup_is_most_of_it(tmp_path: Path) -> None:
    """The schedule the config asks for, counted from the training split before any training: 3 images in batches
    of 2 (the partial batch dropped) for 4 epochs = 4 steps, of which the 100-step warmup is all."""
    root = tmp_path / "data"
    write_color_splits(root, per_split=3)
    cfg = tmp_path / "seg.yaml"
    model = {"class_path": "SegmentationTask", "init_args": {"scheduler": {"name": "poly", "warmup_steps": 100}}}
    data = {"class_path": "SegmentationFolderDataModule", "init_args": {"root": str(root), "batch_size": 2}}
    cfg.write_text(yaml.safe_dump({"data": data, "model": model, "trainer": {"max_epochs": 4}}))
    text = main(["data", "--config", str(cfg), "--output", str(tmp_path / "look")])
    assert "schedule: 4 optimizer steps on one device (trainer.max_epochs 4 x 1 batches of 2 (3 training" in text
    assert "warmup 100 steps (2500%)" in text and "the lr never reaches its peak" in text
    cfg.write_text(yaml.safe_dump({"data": data, "model": model, "trainer": {"max_steps": 1000}}))
    text = main(["data", "--config", str(cfg), "--output", str(tmp_path / "look")])
    assert "schedule: 1000 optimizer steps on one device (trainer.max_steps 1000); warmup 100 steps (10%)" in text
    assert "never reaches" not in text and "reaches its peak only" not in text
    # both limits: Lightning stops at the first (here the 4 epochs' 4 steps: the warmup is all of them again)
    cfg.write_text(yaml.safe_dump({"data": data, "model": model, "trainer": {"max_steps": 1000, "max_epochs": 4}}))
    text = main(["data", "--config", str(cfg), "--output", str(tmp_path / "look")])
    assert "schedule: 4 optimizer steps" in text and "never reaches its peak" in text
    cfg.write_text(yaml.safe_dump({"data": data, "model": model, "trainer": {"max_steps": 3, "max_epochs": 4}}))
    assert "schedule: 3 optimizer steps on one device (trainer.max_steps 3, before trainer.max_epochs 4" in main(
        ["data", "--config", str(cfg), "--output", str(tmp_path / "look")]
    )
