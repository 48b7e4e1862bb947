"""Classification and detection templates against a plain PyTorch loop, on the small real samples.

    python benchmarks/small_tasks.py --task classification     # hymenoptera_sample: ants vs bees
    python benchmarks/small_tasks.py --task detection          # raccoon_sample: one class, COCO boxes
    python benchmarks/small_tasks.py --task classification --seeds 0 1 2 --only peer

Both sides start from the same ImageNet ViT-Ti weights (../shared/weights/vit_tiny_patch16_224.safetensors), see
the same training images for the same epochs, batch and input size, and are scored on the same val split after the
last epoch (no checkpoint picked on val: val is the only held-out split here).

- vitdense: the shipped template (configs/classification_folder.yaml or configs/detection_coco.yaml) through the
  real CLI, with only the data root, the weights and the budget (--epochs, --size) set.
- peer: what a user writes by hand in ~40 lines: timm's ViT-Ti with a new linear head (classification) or
  torchvision's Faster R-CNN on the ViT's last feature map (the torchvision tutorial's custom-backbone recipe,
  detection), AdamW lr 1e-4, weight decay 0.05, cosine schedule, random-resized-crop / flip augmentation.

Rows (accuracy and macro F1, or COCO mAP and mAP_50, per seed and their mean) go to
<out>/<task>.json and <out>/<task>.md. The samples are tiny (12 val images for classification, 8 for detection):
read the mean over seeds, and the spread between them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import timm
import torch
import torch.nn.functional as F
from machine import matmul_gflops  # benchmarks/machine.py
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vitdense.cli import main as vitdense_main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WEIGHTS = SHARED / "weights" / "vit_tiny_patch16_224.safetensors"
TASKS = {
    "classification": {"root": SHARED / "data" / "hymenoptera_sample", "config": "classification_folder.yaml",
                       "epochs": 30, "batch": 16, "size": 224, "metrics": ("acc", "f1")},
    "detection": {"root": SHARED / "data" / "raccoon_sample", "config": "detection_coco.yaml",
                  "epochs": 24, "batch": 4, "size": 384, "metrics": ("mAP", "mAP_50")},
}  # fmt: skip


def run_vitdense(task: str, args: argparse.Namespace, seed: int, work: Path) -> dict[str, float]:
    """Fine-tune the shipped template through the CLI; the val metrics after the last epoch."""
    spec = TASKS[task]
    argv = [
        "fit", "--config", str(REPO / "configs" / spec["config"]), "--seed_everything", str(seed),
        "--data.root", str(args.root or spec["root"]), "--model.backbone.pretrained", str(args.weights),
        "--data.batch_size", str(args.batch or spec["batch"]), "--data.num_workers", "0",
        "--data.image_size", str(args.size or spec["size"]),
        "--trainer.max_epochs", str(args.epochs or spec["epochs"]), "--trainer.check_val_every_n_epoch",
        str(args.epochs or spec["epochs"]), "--trainer.default_root_dir", str(work),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
        "--trainer.logger", "false",
    ]  # fmt: skip
    for item in args.set or []:
        key, _, value = item.partition("=")
        argv += [f"--{key}", value]
    cli = vitdense_main(argv)
    logged = cli.trainer.callback_metrics
    return {m: float(logged[f"val/{m}"]) for m in spec["metrics"]}


# ---- the plain loop ------------------------------------------------------------------------------------------------


def vit_tiny(weights: Path, **kwargs: Any) -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay={"file": str(weights)},
                             **kwargs)  # fmt: skip


def adamw_cosine(model: nn.Module, steps: int) -> tuple[torch.optim.Optimizer, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / steps, 1))))


def peer_classification(args: argparse.Namespace, seed: int) -> dict[str, float]:
    from torchmetrics.functional.classification import multiclass_f1_score
    from torchvision import datasets
    from torchvision import transforms as T

    root, size = Path(args.root or TASKS["classification"]["root"]), args.size or 224
    norm = T.Normalize([0.5] * 3, [0.5] * 3)
    train_tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    val_tf = T.Compose([T.Resize(int(size / 0.875)), T.CenterCrop(size), T.ToTensor(), norm])
    train, val = datasets.ImageFolder(root / "train", train_tf), datasets.ImageFolder(root / "val", val_tf)
    model = vit_tiny(args.weights, num_classes=len(train.classes), img_size=size)
    loader = DataLoader(train, batch_size=args.batch or 16, shuffle=True)
    epochs = args.epochs or TASKS["classification"]["epochs"]
    opt, sched = adamw_cosine(model, epochs * len(loader))
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x, _ in DataLoader(val, batch_size=16)])
    truth, k = torch.tensor(val.targets), len(val.classes)
    f1 = multiclass_f1_score(pred, truth, num_classes=k, average="macro")
    return {"acc": float((pred == truth).float().mean()), "f1": float(f1)}


class CocoBoxes(Dataset):
    """Images and xyxy boxes of a COCO file; training flips half of them."""

    def __init__(self, folder: Path, train: bool) -> None:
        data = json.loads((folder / "annotations.json").read_text())
        self.folder, self.train = folder / "images", train
        self.images = data["images"]
        self.boxes: dict[int, list[list[float]]] = {img["id"]: [] for img in self.images}
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            self.boxes[ann["image_id"]].append([x, y, x + w, y + h])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from PIL import Image
        from torchvision.transforms.functional import to_tensor

        img = self.images[i]
        image = to_tensor(Image.open(self.folder / img["file_name"]).convert("RGB"))
        boxes = torch.tensor(self.boxes[img["id"]], dtype=torch.float32).reshape(-1, 4)
        if self.train and torch.rand(()) < 0.5:
            image = image.flip(-1)
            boxes = torch.stack([image.shape[-1] - boxes[:, 2], boxes[:, 1], image.shape[-1] - boxes[:, 0],
                                 boxes[:, 3]], 1)  # fmt: skip
        return image, {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64)}


class LastMap(nn.Module):
    """ViT-Ti's last block as one stride-16 map (the torchvision tutorial's single-map custom backbone)."""

    def __init__(self, weights: Path, size: int) -> None:
        super().__init__()
        self.vit = vit_tiny(weights, num_classes=0, img_size=size, dynamic_img_size=True)
        self.out_channels = self.vit.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_intermediates(x, indices=1, output_fmt="NCHW", intermediates_only=True)[-1]


def peer_detection(args: argparse.Namespace, seed: int) -> dict[str, float]:
    from torchmetrics.detection import MeanAveragePrecision
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    root, size = Path(args.root or TASKS["detection"]["root"]), args.size or TASKS["detection"]["size"]
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    model = FasterRCNN(
        LastMap(args.weights, size), num_classes=2, rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2),
        min_size=size, max_size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3, size_divisible=16,
    )  # fmt: skip
    train = CocoBoxes(root / "train", train=True)
    loader = DataLoader(train, batch_size=args.batch or 4, shuffle=True, collate_fn=lambda b: tuple(zip(*b)))
    epochs = args.epochs or TASKS["detection"]["epochs"]
    opt, sched = adamw_cosine(model, epochs * len(loader))
    for _ in range(epochs):
        model.train()
        for images, targets in loader:
            loss = sum(model(list(images), list(targets)).values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
    model.eval()
    metric = MeanAveragePrecision(box_format="xyxy")
    val = CocoBoxes(root / "val", train=False)
    with torch.no_grad():
        for image, target in val:
            metric.update(model([image]), [target])
    out = metric.compute()
    return {"mAP": float(out["map"]), "mAP_50": float(out["map_50"])}


# ---- driver --------------------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", choices=("vitdense", "peer"), help="run one side only (rows of the other are kept)")
    p.add_argument("--root", type=Path, help="dataset root (default: the shared sample of the task)")
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--epochs", type=int, help="training epochs (default: classification 30, detection 24)")
    p.add_argument("--batch", type=int, help="batch size (default: the template's)")
    p.add_argument("--size", type=int, help="input size (default: classification 224, detection 384 long side)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="CLI override of the vitdense side, repeatable (e.g. model.init_args.optimizer.head_lr_mult=10)",
    )
    p.add_argument("--variant", help="name of the vitdense row when --set changes the template")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "small_tasks")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.task}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    spec = TASKS[args.task]
    sides = [args.only] if args.only else ["vitdense", "peer"]
    for side in sides:
        row_name = f"vitdense, {args.variant}" if side == "vitdense" and args.variant else side
        for seed in args.seeds:
            gflops = matmul_gflops()
            start = time.perf_counter()
            L.seed_everything(seed)
            with tempfile.TemporaryDirectory() as work:
                if side == "vitdense":
                    scores = run_vitdense(args.task, args, seed, Path(work))
                elif args.task == "classification":
                    scores = peer_classification(args, seed)
                else:
                    scores = peer_detection(args, seed)
            row = {**scores, "seconds": round(time.perf_counter() - start, 1), "gflops": round(gflops, 1),
                   "epochs": args.epochs or spec["epochs"], "batch": args.batch or spec["batch"],
                   "size": args.size or spec["size"]}  # fmt: skip
            results.setdefault(row_name, {})[str(seed)] = row
            print(f"[small_tasks] {args.task} {row_name} seed {seed}: {row}", flush=True)
            path.write_text(json.dumps(results, indent=1))
    lines = [f"# {args.task}: vitdense template vs plain loop ({', '.join(spec['metrics'])} on val, last epoch)", "",
             "| side | seed | " + " | ".join(spec["metrics"]) + " | seconds | GFLOP/s | epochs x batch | size |",
             "| --- " * (len(spec["metrics"]) + 6) + "|"]  # fmt: skip
    for side, rows in results.items():
        for seed, r in sorted(rows.items()):
            vals = " | ".join(f"{r[m]:.3f}" for m in spec["metrics"])
            lines.append(f"| {side} | {seed} | {vals} | {r['seconds']:.0f} | {r['gflops']:.0f} | "
                         f"{r['epochs']}x{r['batch']} | {r['size']} |")  # fmt: skip
        means = " | ".join(f"**{statistics.mean(r[m] for r in rows.values()):.3f}**" for m in spec["metrics"])
        lines.append(f"| {side} | mean of {len(rows)} | {means} | | | | |")
    (args.out / f"{args.task}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
