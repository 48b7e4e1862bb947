"""Prediction panels in the logger: a tiny fit per task writes ``val/panels`` to TensorBoard after each validation,
drawn from the model's own predictions; the extra cost is the panel images' inference once per validation."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import vitdense.tasks.panels
from tests.tiny import MODELS, PATCH8_VIT_D2
from vitdense import SegmentationTask
from vitdense.cli.entry import main
from vitdense.data import SyntheticSegmentationDataModule
from vitdense.tasks.panels import (
    HEADER,
    TAG,
    PredictionPanels,
    choose_items,
    classification_panel,
    colorize,
    detection_panel,
    display_image,
    palette_array,
    tile_size,
)
from vitdense.tasks.segmentation import class_palette

SPLITS = {"num_train": 4, "num_val": 6, "num_test": 2, "image_size": 32, "batch_size": 4}
COUNT = 4


def fit(root: Path, kind: str) -> tuple[object, PredictionPanels]:
    task, extra, data = MODELS[kind]
    cfg = {
        "model": {"class_path": task, "init_args": {"backbone": PATCH8_VIT_D2, "log_images": COUNT, **extra}},
        "data": {"class_path": data, "init_args": SPLITS},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(root), "num_sanity_val_steps": 0},
    }  # fmt: skip
    path = root / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cli = main(["fit", "--config", str(path)])
    (panels,) = [c for c in cli.trainer.callbacks if isinstance(c, PredictionPanels)]
    return cli, panels


def read_panels(log_dir: str) -> list[tuple[int, np.ndarray]]:
    acc = EventAccumulator(log_dir, size_guidance={"images": 0})
    acc.Reload()
    return [(e.step, np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB")))
            for e in acc.Images(TAG)]  # fmt: skip


def val_images(cli, panels: PredictionPanels) -> list[dict]:
    dataset = cli.datamodule.dataset("val")
    return [dataset[i] for i in panels.indices]


def test_segmentation_panels_show_the_models_argmax(tmp_path: Path) -> None:
    cli, panels = fit(tmp_path, "segmentation")
    events = read_panels(cli.trainer.log_dir)
    steps_per_epoch = cli.trainer.global_step // 2
    assert [step for step, _ in events] == [steps_per_epoch, 2 * steps_per_epoch]  # one panel per validation
    assert len(panels.indices) == COUNT
    task = cli.model.eval()
    items = val_images(cli, panels)
    th, tw = tile_size(32, 32)
    factor = th // 32
    panel = events[-1][1]
    assert panel.shape[0] > HEADER + COUNT * th and panel.shape[1] == 4 * tw  # header, rows, legend below
    colors = palette_array(task.palette())
    with torch.no_grad():
        for row, item in enumerate(items):
            pred = task(item["image"][None])[0].argmax(0).numpy()
            tile = panel[HEADER + row * th : HEADER + (row + 1) * th, 2 * tw : 3 * tw]
            np.testing.assert_array_equal(tile[::factor, ::factor], colorize(pred, colors))
            truth = panel[HEADER + row * th : HEADER + (row + 1) * th, tw : 2 * tw]
            np.testing.assert_array_equal(truth[::factor, ::factor], colorize(item["mask"].numpy(), colors, 255))
    # The items were chosen to show every class of the split.
    shown = set().union(*(set(item["mask"].unique().tolist()) for item in items))
    assert shown == set(range(task.num_classes))


@pytest.mark.slow  # detection 3-6 s, instance 7 s on 2 shared cores
@pytest.mark.parametrize("kind", ["detection", "instance"])
def test_detection_panels_draw_the_models_detections(tmp_path: Path, kind: str, monkeypatch) -> None:
    monkeypatch.setattr(vitdense.tasks.panels, "MIN_SCORE", 0.0)  # draw the untrained detector's boxes too
    cli, panels = fit(tmp_path, kind)
    events = read_panels(cli.trainer.log_dir)
    assert len(events) == 2
    task = cli.model.eval()
    items = val_images(cli, panels)
    with torch.no_grad():
        preds = task([item["image"] for item in items])
    assert sum(len(p["boxes"]) for p in preds) > 0  # score_thresh 0: there is something to draw
    images = [display_image(item["image"]) for item in items]
    expected = detection_panel(images, [item["target"] for item in items], preds, class_palette(256),
                               task.class_names, panels.min_score)  # fmt: skip
    _, tw = tile_size(32, 32)
    assert expected.shape[:2] == events[-1][1].shape[:2] and expected.shape[1] == 2 * tw
    np.testing.assert_array_equal(events[-1][1], expected)
    assert not np.array_equal(events[-1][1][:, tw:], events[0][1][:, tw:])  # predictions change as it learns


@pytest.mark.slow  # 2-3 s
def test_classification_panel_is_a_captioned_grid(tmp_path: Path) -> None:
    cli, panels = fit(tmp_path, "classification")
    events = read_panels(cli.trainer.log_dir)
    assert len(events) == 2
    task = cli.model.eval()
    items = val_images(cli, panels)
    assert sorted({int(item["label"]) for item in items}) == [0, 1, 2]  # every class shown
    with torch.no_grad():
        probs = task(torch.stack([item["image"] for item in items])).softmax(-1)
    score, pred = probs.max(-1)
    labels = [int(item["label"]) for item in items]
    expected = classification_panel([display_image(item["image"]) for item in items], labels, pred.tolist(),
                                    score.tolist(), task.class_names)  # fmt: skip
    th, tw = tile_size(32, 32)
    assert events[-1][1].shape == (2 * (th + 26), 2 * tw, 3)  # 4 images: 2 x 2
    np.testing.assert_allclose(events[-1][1], expected, atol=0)


def _count_backbone_images(log_images: int, root: Path) -> int:
    task = SegmentationTask(backbone=PATCH8_VIT_D2, num_classes=4, head={"channels": 16, "aux_channels": 8},
                            log_images=log_images)  # fmt: skip
    seen = [0]
    task.backbone.register_forward_hook(lambda m, args, out: seen.__setitem__(0, seen[0] + args[0].shape[0]))
    data = SyntheticSegmentationDataModule(**SPLITS)
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=TensorBoardLogger(root), enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=1)  # fmt: skip
    trainer.fit(task, data)
    return seen[0]


def test_panels_cost_one_inference_of_their_images_per_validation(tmp_path: Path) -> None:
    with_panels = _count_backbone_images(3, tmp_path / "a")
    without = _count_backbone_images(0, tmp_path / "b")
    assert with_panels - without == 3  # 3 images x 1 validation (none for the sanity check)


def test_choose_items_covers_the_classes_first() -> None:
    classes = [{0}, {0}, {0, 1}, {0}, {2}, {0, 3}, {0}]
    assert choose_items(classes, 3) == [2, 4, 5]
    assert choose_items(classes, 5) == [0, 1, 2, 4, 5]
    assert choose_items(classes, 20) == list(range(7))


@pytest.mark.slow  # 3-8 s, most of it mlflow's import
def test_mlflow_run_receives_the_panels(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 asks for this to use a local folder
    from lightning.pytorch.loggers import MLFlowLogger

    task = SegmentationTask(backbone=PATCH8_VIT_D2, num_classes=4, head={"channels": 16, "aux_channels": 8},
                            log_images=2)  # fmt: skip
    tb = TensorBoardLogger(tmp_path / "tb")
    ml = MLFlowLogger(experiment_name="panels", tracking_uri=(tmp_path / "mlruns").as_uri())
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=[tb, ml], enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(task, SyntheticSegmentationDataModule(**SPLITS))
    (_, expected), *_ = read_panels(tb.log_dir)
    run = ml.experiment.get_run(ml.run_id)
    files = sorted(Path(run.info.artifact_uri.removeprefix("file://")).rglob("*.png"))
    full = [np.asarray(Image.open(f).convert("RGB")) for f in files if "compressed" not in f.name]
    assert any(a.shape == expected.shape and np.array_equal(a, expected) for a in full), [f.name for f in files]
