"""Tiny backbone configurations for the tests: each defined once here, named by its shape.

Several tests' numbers (FLOP counts, layer-decay tables, tolerances, DDP metrics) were written for one particular
variant, so the variants are kept apart rather than merged: change one only together with the tests that use it.
"""

import os
import shutil
from pathlib import Path

import torch
import yaml

from vitdense.cli.entry import main

VIT = "vit_tiny_patch16_224"
SWIN = "swin_tiny_patch4_window7_224"
HYBRID = "vit_tiny_r_s16_p8_224"
FAMILIES = [VIT, "deit_tiny_distilled_patch16_224", SWIN, HYBRID]

# Shrunk variants of each family keep the default suite fast (`model_kwargs` only).
TINY = {"depth": 4, "embed_dim": 64, "num_heads": 2}
TINY_SWIN = {"depths": (1, 1, 1, 1), "embed_dim": 32, "num_heads": (1, 2, 4, 8)}


def tiny(name: str) -> dict:
    """A backbone config for any of FAMILIES, shrunk with TINY (TINY_SWIN for Swin)."""
    return {"name": name, "model_kwargs": TINY_SWIN if name.startswith("swin") else TINY}


def tiny_vit(path: str | Path | None = None, img_size: int = 32, **extra) -> dict:
    """The TINY ViT at ``img_size``; ``path``: a local weights file or checkpoint to start from."""
    cfg = {"name": VIT, "img_size": img_size, "model_kwargs": TINY, **extra}
    if path is not None:
        cfg["pretrained"] = str(path)
    return cfg


# Two ViT blocks of width 32: the smallest ViT the task tests build.
VIT_D2_W32 = {"name": VIT, "model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2}}
# One block per Swin stage, at width 16 and at width 24.
SWIN_W16 = {"name": SWIN, "model_kwargs": {"depths": (1, 1, 1, 1), "embed_dim": 16, "num_heads": (1, 1, 2, 2)}}
SWIN_W24 = {"name": SWIN, "model_kwargs": {"depths": [1, 1, 1, 1], "embed_dim": 24, "num_heads": [1, 2, 3, 4]}}

# For runs through the CLI on 32-pixel synthetic images: patch 8 (16 tokens), 4 or 2 blocks, written to YAML. The CLI
# links img_size from the data; PATCH8_VIT_D2 states it too, for the tests that build tasks in Python.
PATCH8_VIT_D4 = {"name": VIT, "pretrained": False,
                 "model_kwargs": {"patch_size": 8, "depth": 4, "embed_dim": 32, "num_heads": 2}}  # fmt: skip
PATCH8_VIT_D2 = {"name": VIT, "pretrained": False, "img_size": 32,
                 "model_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}}  # fmt: skip
# A Swin with 2x2 windows at 64 pixels, for the DDP runs.
SWIN_W16_WINDOW2 = {"name": SWIN, "pretrained": False,
                    "model_kwargs": {"depths": [1, 1, 1, 1], "embed_dim": 16, "num_heads": [1, 1, 2, 2],
                                     "window_size": 2}}  # fmt: skip

# The estimate's references: FLOPs counted on these exact shapes.
VIT_D4_W48 = {"name": VIT, "model_kwargs": {"depth": 4, "embed_dim": 48, "num_heads": 3}}
SWIN_D1121_W24 = {"name": SWIN, "model_kwargs": {"depths": [1, 1, 2, 1], "embed_dim": 24, "num_heads": [1, 2, 3, 4]}}
HYBRID_D2 = {"name": HYBRID, "model_kwargs": {"depth": 2}}

# Today's foundation backbones (DINOv2 with registers, DINOv3 with RoPE, EVA-02, SigLIP with its attention-pool
# head), as 2-block variants.
FOUNDATION_NAMES = [
    "vit_small_patch14_reg4_dinov2",
    "vit_small_patch16_dinov3",
    "eva02_tiny_patch14_224",
    "vit_base_patch16_siglip_224",
]


def tiny_foundation(name: str) -> dict:
    """A 2-block, width-48 variant of one of FOUNDATION_NAMES, with random weights."""
    return {"name": name, "pretrained": False, "model_kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 2}}


# ---- tiny trained runs (for evaluation and the notebooks) ----------------------------------------------------------

SPLITS = {"num_train": 8, "num_val": 6, "num_test": 4, "image_size": 32, "batch_size": 4}
MODELS = {
    "segmentation": ("SegmentationTask", {"head": {"channels": 16, "aux_channels": 8}},
                     "SyntheticSegmentationDataModule"),
    "classification": ("ClassificationTask", {}, "SyntheticClassificationDataModule"),
    # score_thresh 0: an untrained detector's boxes are kept, so AP is computed over real detections.
    "detection": ("DetectionTask", {"head": {"channels": 16, "score_thresh": 0.0}}, "SyntheticDetectionDataModule"),
    "instance": ("InstanceSegmentationTask", {"head": {"channels": 32, "roi_batch_size": 32, "box_head_width": 64,
                                                       "score_thresh": 0.0}}, "SyntheticInstanceDataModule"),
}  # fmt: skip
# Runs trained longer than 2 epochs: Mask R-CNN's masks reach a mask mAP above 0 on the synthetic val images only
# after ~12 epochs (0 at 2 and 6, 0.08 at 12), and the mask AP tests must not compare 0 with 0.
MODELS["instance_trained"] = MODELS["instance"]
EPOCHS = {"instance_trained": 12}


def train_tiny_run(root: Path, kind: str) -> tuple[Path, Path]:
    """``root/configs/<kind>.yaml`` and the last checkpoint of its run on synthetic data (2 epochs unless EPOCHS
    says), in ``root/runs/<kind>/version_0`` (where the notebooks look for the newest run of a config)."""
    task, extra, data = MODELS[kind]
    cfg = {
        "model": {"class_path": task, "init_args": {"backbone": PATCH8_VIT_D4, "optimizer": {"lr": 1e-3}, **extra}},
        "data": {"class_path": data, "init_args": SPLITS},
        "trainer": {"max_epochs": EPOCHS.get(kind, 2), "accelerator": "cpu", "enable_progress_bar": False,
                    "enable_model_summary": False,
                    "default_root_dir": str(root / "runs")},
    }  # fmt: skip
    path = root / "configs" / f"{kind}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(path)])
    (ckpt,) = (root / "runs").glob(f"{kind}/version_0/checkpoints/last.ckpt")
    return path, ckpt


def copy_tiny_run(trained: Path, root: Path, kind: str) -> tuple[Path, Path]:
    """A copy of ``train_tiny_run(trained, kind)`` in ``root``, as if trained there: the paths the run wrote (configs,
    summary, the checkpoints' callback state) name ``root``, and every file keeps its time (the newest run is found by
    it)."""
    old, new = str(trained), str(root)
    (root / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copy2(trained / "configs" / f"{kind}.yaml", root / "configs" / f"{kind}.yaml")
    shutil.copytree(trained / "runs" / kind, root / "runs" / kind)
    for path in [root / "configs" / f"{kind}.yaml", *(root / "runs" / kind).rglob("*")]:
        if not path.is_file():
            continue
        stat = path.stat()
        if path.suffix == ".ckpt":
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            ckpt["callbacks"] = _replaced(ckpt["callbacks"], old, new)
            torch.save(ckpt, path)
        elif path.suffix in (".yaml", ".json", ".csv"):
            path.write_text(path.read_text().replace(old, new))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return root / "configs" / f"{kind}.yaml", root / "runs" / kind / "version_0" / "checkpoints" / "last.ckpt"


def _replaced(value, old: str, new: str):
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: _replaced(v, old, new) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_replaced(v, old, new) for v in value)
    return value
