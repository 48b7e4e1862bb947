"""Two CPU processes (DDP over gloo) through the real CLI, for every task and detector.

One launch runs every config (the process start-up is the expensive part): fit + validate complete, val metrics
equal one process's over the same split (5 val images over 2 processes: none counted twice), every rank ends with
the same weights, also when the backbone is unfrozen mid-run; `predict` from the checkpoint writes what one process
writes, into one folder.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.tiny import PATCH8_VIT_D2, SWIN_W16_WINDOW2
from vitdense.cli.entry import PredictionWriter, main

WORKER = Path(__file__).with_name("ddp_worker.py")

TRAINER = {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "max_epochs": 1, "precision": "32",
           "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0}  # fmt: skip

SPLITS = {"num_train": 8, "num_val": 5, "batch_size": 2, "seed": 0}


def without_img_size(backbone: dict) -> dict:
    """The backbone config without img_size: the CLI links it from the data's image size."""
    return {k: v for k, v in backbone.items() if k != "img_size"}


def _configs() -> dict[str, dict]:
    seg_head = {"channels": 16, "aux_channels": 8}
    seg = {"model": {"class_path": "SegmentationTask", "init_args": {"backbone": PATCH8_VIT_D2, "head": seg_head}},
           "data": {"class_path": "SyntheticSegmentationDataModule",
                    "init_args": {**SPLITS, "image_size": 32}}}  # fmt: skip
    cls = {"model": {"class_path": "ClassificationTask",
                     "init_args": {"backbone": PATCH8_VIT_D2, "unfreeze_at_epoch": 1, "optimizer": {"lr": 1e-3}}},
           "data": {"class_path": "SyntheticClassificationDataModule", "init_args": {**SPLITS, "image_size": 32}},
           "trainer": {"max_epochs": 2}}  # fmt: skip
    inst_head = {"channels": 32, "roi_batch_size": 32, "box_head_width": 64, "score_thresh": 0.0}
    inst = {"model": {"class_path": "InstanceSegmentationTask",
                      "init_args": {"backbone": without_img_size(PATCH8_VIT_D2), "head": inst_head}},
            "data": {"class_path": "SyntheticInstanceDataModule",
                     "init_args": {**SPLITS, "image_size": 64}}}  # fmt: skip
    # FSDP2 through Lightning's ModelParallelStrategy (FSDPStrategy, FSDP1, needs a GPU), a full checkpoint file.
    fsdp = {
        "class_path": "lightning.pytorch.strategies.ModelParallelStrategy",
        "init_args": {"data_parallel_size": 2, "tensor_parallel_size": 1, "save_distributed_checkpoint": False},
    }
    recipe = {"optimizer": {"lr": 1e-3, "layer_decay": 0.9, "head_lr_mult": 10.0}}  # one lr per block and the head
    seg_fsdp = {"model": {**seg["model"], "init_args": {**seg["model"]["init_args"], **recipe}},
                "data": {**seg["data"], "init_args": {**seg["data"]["init_args"], "num_test": 8}},
                "trainer": {"strategy": fsdp}}  # fmt: skip
    configs = {"seg_vit": seg, "seg_fsdp": seg_fsdp, "cls_vit_unfreeze": cls,
               "inst_vit": inst}  # fmt: skip
    for head in ("retinanet", "fcos", "faster_rcnn"):
        for name, backbone in (("vit", PATCH8_VIT_D2), ("swin", SWIN_W16_WINDOW2)):
            configs[f"det_{head}_{name}"] = {
                "model": {"class_path": "DetectionTask",
                          "init_args": {"backbone": without_img_size(backbone), "head": {"name": head,
                                                                   "channels": 32, "score_thresh": 0.0}}},
                "data": {"class_path": "SyntheticDetectionDataModule", "init_args": {**SPLITS, "image_size": 160}},
            }  # fmt: skip
    return configs


# val/loss too: the mean over the split's images (3 on one process, 2 on the other), not a mean of process means.
MONITOR = {
    "seg": ["val/mIoU", "val/pixel_acc", "val/loss"],
    "cls": ["val/acc", "val/f1", "val/loss"],
    "det": ["val/mAP", "val/mAP_50", "val/loss"],
    "inst": ["val/mask_mAP", "val/mAP", "val/loss"],
}


# The default suite launches one config per task family (the process start-up and the detectors dominate the time);
# the slow suite adds FSDP, instance segmentation and the other detector x backbone pairs.
DEFAULT = ("seg_vit", "cls_vit_unfreeze", "det_retinanet_vit")


def _names(names) -> list:
    return [n if n in DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in names]


def _requested(session: pytest.Session) -> set[str]:
    """The configs the selected tests of this module read (the launch runs only those)."""
    needed = set()
    for item in session.items:
        if item.module is None or item.module.__name__ != __name__:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "name" in callspec.params:
            needed.add(callspec.params["name"])
        elif "fsdp" in item.name:
            needed.add("seg_fsdp")
        elif "unfreeze" in item.name:
            needed.add("cls_vit_unfreeze")
    return needed


@pytest.fixture(scope="module")
def ddp_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("ddp")
    paths = {}
    needed = _requested(request.session)
    for name, cfg in _configs().items():
        if name not in needed:
            continue
        cfg["trainer"] = {**TRAINER, **cfg.get("trainer", {}), "default_root_dir": str(root / "runs")}
        cfg["seed_everything"] = 0
        paths[name] = root / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(cfg))
    out = root / "out"
    out.mkdir()
    result = subprocess.run([sys.executable, str(WORKER), str(out), *map(str, paths.values())],
                            capture_output=True, text=True, timeout=900, cwd=root)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return out, paths


def _results(out: Path, name: str) -> list[dict]:
    return [torch.load(out / f"{name}.rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.parametrize("name", _names(_configs()))
def test_ddp_fit_validate_and_metrics_equal_one_process(ddp_runs, name: str, tmp_path: Path) -> None:
    out, paths = ddp_runs
    rank0, rank1 = _results(out, name)
    for key in rank0["after"]:
        assert torch.equal(rank0["after"][key], rank1["after"][key]), f"{key} differs between ranks"
    assert rank0["validated"] == rank1["validated"]  # every rank logs the metrics of the whole split
    assert rank0["val_items"] + rank1["val_items"] == SPLITS["num_val"]  # 3 + 2: no image repeated to even out

    run = Path(rank0["log_dir"])
    logged = _last_row(run / "metrics.csv")
    single = main(["validate", "--config", str(paths[name]), "--ckpt_path", str(out / f"{name}.ckpt"),
                   "--trainer.devices", "1", "--trainer.strategy", "auto", "--trainer.logger", "false",
                   "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    for key in MONITOR[name.split("_")[0]]:
        expected = single.trainer.callback_metrics[key].item()
        assert float(logged[key]) == pytest.approx(expected, abs=1e-4), key
        assert rank0["validated"][key] == pytest.approx(expected, abs=1e-4), key


def test_ddp_unfreeze_trains_the_same_backbone_on_every_rank(ddp_runs) -> None:
    out, _ = ddp_runs
    rank0, rank1 = _results(out, "cls_vit_unfreeze")
    changed = [k for k in rank0["before"] if not torch.equal(rank0["before"][k], rank0["after"][k])]
    assert "model.blocks.0.attn.qkv.weight" in changed and "model.patch_embed.proj.weight" in changed
    assert all(torch.equal(rank0["after"][k], rank1["after"][k]) for k in rank0["after"])


@pytest.mark.slow  # its own 2-process config: ~15 s more in the launch
def test_fsdp_shards_and_its_checkpoint_tests_the_same_in_one_process(ddp_runs, tmp_path: Path) -> None:
    """Segmentation under FSDP2 (ModelParallelStrategy on 2 CPU processes, gloo): the model is sharded, and a
    one-process `test` of its checkpoint gives the test metrics of the 2-process run."""
    out, paths = ddp_runs
    rank0, rank1 = _results(out, "seg_fsdp")
    assert rank0["sharded"] and rank1["sharded"]
    # each process holds half of the parameters (dim-0 shards: a row more or less per tensor), together all of them
    assert rank0["held"] + rank1["held"] == rank0["numel"]
    assert abs(rank0["held"] - rank0["numel"] / 2) < 0.02 * rank0["numel"]
    assert rank0["tested"] == rank1["tested"]
    one_process = ["--trainer.devices", "1", "--trainer.strategy", "auto", "--trainer.logger", "false",
                   "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    # layer decay and the head multiplier hold under sharding: each group's lr and size as the unsharded model's
    unsharded = main(["--config", str(paths["seg_fsdp"]), *one_process], run=False).model.configure_optimizers()
    expected = [(g["initial_lr"], sum(p.numel() for p in g["params"])) for g in unsharded["optimizer"].param_groups]
    assert len({lr for lr, _ in expected}) > 3  # the test means something: several layer-decayed lrs
    for rank in (rank0, rank1):
        assert [n for _, n in rank["groups"]] == [n for _, n in expected]
        assert [lr for lr, _ in rank["groups"]] == pytest.approx([lr for lr, _ in expected], rel=1e-12)
    single = main(["test", "--config", str(paths["seg_fsdp"]), "--ckpt_path", str(out / "seg_fsdp.ckpt"),
                   *one_process])  # fmt: skip
    for key in ("test/mIoU", "test/pixel_acc", "test/loss"):  # each process's BatchNorm statistics are rank 0's
        assert rank0["tested"][key] == pytest.approx(single.trainer.callback_metrics[key].item(), abs=1e-4), key


PREDICTED = {
    "seg_vit": "*.png",
    "seg_fsdp": "*.png",
    "cls_vit_unfreeze": "predictions.csv",
    "det_retinanet_vit": "predictions.jsonl",
    "det_faster_rcnn_swin": "predictions.jsonl",
    "inst_vit": "predictions.jsonl",
}


@pytest.mark.parametrize("name", _names(PREDICTED))
def test_ddp_predict_writes_each_image_once_in_order_into_one_folder(ddp_runs, name: str, tmp_path: Path) -> None:
    """Both processes write into rank 0's folder; files of one line per image are merged in dataset order, each image
    once, and hold what one process writes (an RLE-mask line of instance predict is larger than one write)."""
    out, paths = ddp_runs
    rank0, rank1 = _results(out, name)
    assert rank0["predict_dir"] == rank1["predict_dir"]  # one folder, though each process starts at its own time
    assert rank0["predict_count"] == rank1["predict_count"] == SPLITS["num_val"]  # every process's images counted
    (folder,) = (out / "predict" / name / "predictions").iterdir()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # the parts are merged and removed

    single = main(["predict", "--config", str(paths[name]), "--ckpt_path", str(out / f"{name}.ckpt"),
                   "--trainer.devices", "1", "--trainer.strategy", "auto",
                   "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    (expected_dir,) = [cb.output_dir for cb in single.trainer.callbacks if isinstance(cb, PredictionWriter)]
    pattern = PREDICTED[name]
    written, expected = sorted(folder.glob(pattern)), sorted(expected_dir.glob(pattern))
    assert [p.name for p in written] == [p.name for p in expected] and written
    for got, want in zip(written, expected, strict=True):
        if got.suffix == ".png":
            assert np.array_equal(np.array(Image.open(got)), np.array(Image.open(want)))
        elif got.suffix == ".csv":
            rows, ref = list(csv.reader(got.open())), list(csv.reader(want.open()))
            assert rows[0] == ref[0] and [r[:3] for r in rows] == [r[:3] for r in ref]  # header once, same order
            assert np.allclose(np.array([r[3:] for r in rows[1:]], float), np.array([r[3:] for r in ref[1:]], float),
                               atol=1e-4)  # fmt: skip
        else:
            lines = [json.loads(line) for line in got.read_text().splitlines()]
            ref = [json.loads(line) for line in want.read_text().splitlines()]
            assert [x["path"] for x in lines] == [x["path"] for x in ref]  # dataset order, each image once
            for line, ref_line in zip(lines, ref, strict=True):
                assert line["labels"] == ref_line["labels"] and line.get("masks") == ref_line.get("masks")
                assert np.allclose(line["boxes"], ref_line["boxes"], atol=0.02)
                assert np.allclose(line["scores"], ref_line["scores"], atol=2e-4)
    if pattern == "predictions.jsonl":  # the COCO results are made from the merged lines
        coco = json.loads((folder / "coco_results.json").read_text())
        assert len(coco) == sum(len(json.loads(line)["boxes"]) for line in written[0].read_text().splitlines())


def _last_row(path: Path) -> dict[str, str]:
    rows = list(csv.DictReader(path.open()))
    merged: dict[str, str] = {}
    for row in rows:
        merged.update({k: v for k, v in row.items() if v})
    return merged
