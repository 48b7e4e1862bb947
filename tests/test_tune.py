"""``vitdense tune``: the lr range test keeps every parameter group at its recipe ratio (layer decay, head multiplier),
writes the curve and a suggestion that ``fit`` takes; the batch-size finder reports the memory-bound batch on CPU."""

import math
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.tiny import PATCH8_VIT_D2
from vitdense.cli.entry import main
from vitdense.tuning.tune import LRRangeTest, lr_range_test, range_test_cli


def write_config(root: Path) -> Path:
    backbone = {k: v for k, v in PATCH8_VIT_D2.items() if k != "img_size"}
    cfg = {
        "model": {"class_path": "SegmentationTask", "init_args": {
            "backbone": backbone, "head": {"channels": 16, "aux_channels": 8},
            "optimizer": {"lr": 3e-4, "weight_decay": 0.05, "layer_decay": 0.9, "head_lr_mult": 10.0},
            "scheduler": {"name": "poly", "warmup_steps": 50}}},
        "data": {"class_path": "SyntheticSegmentationDataModule",
                 "init_args": {"num_train": 16, "num_val": 4, "image_size": 32, "batch_size": 4}},
        "trainer": {"max_epochs": 3, "accelerator": "cpu", "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(root / "runs")},
    }  # fmt: skip
    path = root / "seg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_range_test_keeps_the_recipe_ratios_and_suggests_a_config(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    cli = range_test_cli(str(config), [], steps=10)
    # The recipe's ratio of each group: its lr (before warmup scales it) over the base lr, as fit configures them.
    recipe = cli.model.configure_optimizers()["optimizer"]
    ratios = [g["initial_lr"] / 3e-4 for g in recipe.param_groups]
    assert max(ratios) / min(ratios) > 10 * 0.9**3 * 0.99  # head 10x, and layer decay spreads the backbone
    test = LRRangeTest(1e-5, 10.0, steps=10, diverge=1e9)  # no early stop: every step is checked
    report = lr_range_test(cli, test, tmp_path / "out")
    assert len(test.group_lrs) == len(test.lrs) == 10
    for lr, held in zip(test.lrs, test.group_lrs, strict=True):
        assert held == pytest.approx([r * lr for r in ratios], rel=1e-9)
    assert test.lrs[0] == pytest.approx(1e-5) and test.lrs[-1] == pytest.approx(10.0)
    # Files: the curve, the losses, and a tune.yaml that fit takes with the recipe's other optimizer settings.
    assert Image.open(tmp_path / "out" / "lr_curve.png").size == (700, 450)
    suggested = test.suggestion()
    assert suggested == pytest.approx(test.lrs[min(range(10), key=test.smoothed.__getitem__)] / 10)
    assert f"model.init_args.optimizer.lr: {suggested:.3g}" in report
    built = main(["--config", str(config), "--config", str(tmp_path / "out" / "tune.yaml"),
                  "--trainer.logger", "false"], run=False)  # fmt: skip
    opt = built.model.optimizer_cfg
    assert opt["lr"] == pytest.approx(float(f"{suggested:.3g}"))
    assert (opt["layer_decay"], opt["head_lr_mult"], opt["weight_decay"]) == (0.9, 10.0, 0.05)


def test_range_test_stops_when_the_loss_diverges(tmp_path: Path) -> None:
    text = main(["tune", "--config", str(write_config(tmp_path)), "--min_lr", "1e-2", "--max_lr", "1e6",
                 "--steps", "16", "--diverge", "1.5", "--output", str(tmp_path / "out")])  # fmt: skip
    lines = (tmp_path / "out" / "lr_range_test.csv").read_text().splitlines()[1:]
    assert 2 <= len(lines) < 16 and "(diverged)" in text
    smoothed = [float(line.split(",")[3]) for line in lines]
    assert not math.isfinite(smoothed[-1]) or smoothed[-1] > 1.5 * min(smoothed)


def test_suggestion_is_the_minimum_over_ten() -> None:
    test = LRRangeTest(1e-4, 1.0, steps=5)
    test.lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    test.smoothed = [2.0, 1.5, 0.8, 1.0, 5.0]
    assert test.suggestion() == pytest.approx(1e-3)
    assert test.steepest() == pytest.approx(1e-3)  # 1.5 -> 0.8 is the steepest fall before the minimum


def test_batch_size_on_cpu_is_the_memory_bound_of_the_estimate(tmp_path: Path, capsys) -> None:
    import json
    import re

    from vitdense.cost.estimate import estimate
    from vitdense.tuning.batch_size import memory_bound_batch

    config = write_config(tmp_path)
    text = main(["tune", "--config", str(config), "--batch_size", "--output", str(tmp_path / "out")])
    found = json.loads((tmp_path / "out" / "batch_size.json").read_text())
    assert found["device"] == "cpu" and found["batch_size"] > 4 and found["configured_batch_size"] == 4
    assert f"data.init_args.batch_size: {found['batch_size']}" in text
    assert not (tmp_path / "out" / "lr_curve.png").exists()  # --batch_size alone runs no range test
    # At 128 px (1.9 MiB per image) with 2000 MiB available and half kept free, against the training memory that
    # `vitdense estimate` reports (in whole MiB) for a batch.
    cli = main(["--config", str(config), "--trainer.logger", "false"], run=False)
    batch = memory_bound_batch(cli.model, (128, 128), 0.5, 2000 * 2**20)["batch_size"]

    def reported_mib(b: int) -> float:
        return float(re.search(r"memory, training: ~(\d+) MiB", estimate(cli.model, (128, 128), b).table())[1])

    assert batch > 100 and reported_mib(batch) <= 1000 <= reported_mib(batch + 1)  # (whole MiB: one more is >= 1000)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="measures CUDA memory")
def test_batch_size_on_cuda_is_the_largest_step_that_fits(tmp_path: Path) -> None:
    from vitdense.tuning.batch_size import measured_batch

    cli = main(["--config", str(write_config(tmp_path)), "--trainer.logger", "false"], run=False)
    found = measured_batch(cli.model, cli.datamodule, "32-true", margin=0.999, limit=1 << 16)
    budget = found["total_mib"] * 0.001
    batch = found["batch_size"]
    assert batch >= 1 and found["peak_mib"][str(batch)] <= budget
    assert str(batch + 1) not in found["peak_mib"] or found["peak_mib"][str(batch + 1)] > budget


class ScriptedLosses(LRRangeTest):
    """A range test whose losses are given (a function of the step) instead of the model's: the run is real (the
    tiny model trains, the files are written), the curve is the one the test asks about."""

    def __init__(self, loss_at, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_at = loss_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import torch

        super().on_train_batch_end(trainer, pl_module, {"loss": torch.tensor(self.loss_at(len(self.losses)))}, batch,
                                   batch_idx)  # fmt: skip


@pytest.mark.parametrize(
    ("edge", "loss_at", "wider"),
    [
        ("max_lr", lambda step: 2.0 - 0.1 * step, "--max_lr 100"),
        ("min_lr", lambda step: 1.0 + 0.1 * step, "--min_lr 1e-07"),
    ],
)
def test_a_minimum_at_the_edge_of_the_range_is_not_suggested(tmp_path: Path, edge, loss_at, wider) -> None:
    config = write_config(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "tune.yaml").write_text("model: {init_args: {optimizer: {lr: 0.5}}}\n")  # an earlier test's answer
    test = ScriptedLosses(loss_at, 1e-5, 1.0, steps=8, diverge=1e9)
    report = lr_range_test(range_test_cli(str(config), [], steps=8), test, out)
    # Nothing fit could take for this test's answer; the report says why and how to widen the range.
    assert not (out / "tune.yaml").exists() and "suggested:" not in report
    assert "no lr suggested and no tune.yaml written" in report and wider in report
    assert test.edge() == edge and len(test.losses) == 8
    assert (out / "lr_curve.png").exists() and len((out / "lr_range_test.csv").read_text().splitlines()) == 9


def test_edge_of_the_range() -> None:
    def edge(smoothed: list[float], steps: int | None = None) -> str | None:
        test = LRRangeTest(1e-4, 1.0, steps=steps or len(smoothed))
        test.smoothed, test.losses = smoothed, smoothed
        test.lrs = [test.lr_at(i) for i in range(len(smoothed))]
        return test.edge()

    falling = [3.0 - 0.1 * i for i in range(20)]
    assert edge(falling) == "max_lr"  # still falling at the last step
    longer = [3.0 - 0.05 * i for i in range(40)]
    assert edge([*longer[:39], longer[38] + 1e-3]) == "max_lr"  # a blip in the last 5% of the steps is no turn
    assert edge([*falling[:15], 1.6, 1.8, 2.0, 2.2, 2.4]) is None  # turned at step 14 of 20
    assert edge([*falling[:12], 5.0], steps=20) is None  # stopped early (diverged) after its minimum
    assert edge([1.0 + 0.1 * i for i in range(20)]) == "min_lr"  # rises from the first step
