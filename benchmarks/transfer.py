"""Transfer benchmark: fine-tune UPerNet + ViT-Ti from ImageNet weights vs from scratch, same budget, on CamVid.

    python benchmarks/transfer.py                       # defaults: ../shared/data/camvid_sample + shared weights
    python benchmarks/transfer.py --steps 200 --crop 320

Prints val/mIoU (and pixel accuracy) of both runs, the wall time of each and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import lightning.pytorch as L
import torch

from vitdense import SegmentationTask
from vitdense.data import SegmentationFolderDataModule

SHARED = Path(__file__).resolve().parents[2] / "shared"


def run(pretrained: str | bool, args: argparse.Namespace) -> dict[str, float]:
    L.seed_everything(args.seed, verbose=False)
    data = SegmentationFolderDataModule(
        args.data, num_classes=11, ignore_index=11, crop_size=args.crop, batch_size=args.batch_size
    )
    task = SegmentationTask(
        backbone={"name": "vit_tiny_patch16_224", "pretrained": pretrained, "img_size": args.crop,
                  "drop_path_rate": 0.1},
        num_classes=data.num_classes,
        class_names=data.class_names,
        ignore_index=data.ignore_index,
        head={"channels": 128, "aux_channels": 64},
        optimizer={"lr": args.lr, "weight_decay": 0.05, "layer_decay": 0.75, "head_lr_mult": 10.0},
        scheduler={"name": "poly", "warmup_steps": args.steps // 10},
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", precision="32", max_steps=args.steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(task, data)
    seconds = time.perf_counter() - start
    trainer = L.Trainer(accelerator="cpu", precision="32", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    (metrics,) = trainer.validate(task, data, verbose=False)
    return {"mIoU": metrics["val/mIoU"], "pixel_acc": metrics["val/pixel_acc"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED / "data" / "camvid_sample"))
    parser.add_argument("--weights", default=str(SHARED / "weights" / "vit_tiny_patch16_224.safetensors"))
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in (args.data, args.weights):
        if not Path(path).exists():
            raise SystemExit(f"{path} not found: pass --data / --weights (see ../shared/data/README.md).")
    torch.set_num_threads(os.cpu_count() or 1)
    results = {"pretrained (ImageNet)": run(args.weights, args), "from scratch": run(False, args)}
    print(f"\nCamVid sample, UPerNet + vit_tiny_patch16_224, {args.steps} steps x batch {args.batch_size}, "
          f"crop {args.crop}, lr {args.lr}, seed {args.seed}")  # fmt: skip
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"{'init':<24}{'val/mIoU':>10}{'pixel_acc':>11}{'train s':>9}")
    for name, r in results.items():
        print(f"{name:<24}{r['mIoU']:>10.4f}{r['pixel_acc']:>11.4f}{r['seconds']:>9.1f}")
    base = results["from scratch"]["mIoU"]
    print(f"pretrained / scratch mIoU ratio: {results['pretrained (ImageNet)']['mIoU'] / max(base, 1e-9):.2f}")


if __name__ == "__main__":
    main()
