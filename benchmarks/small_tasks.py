"""Classification, detection and instance templates against a plain PyTorch loop, on small real sets.

    python benchmarks/small_tasks.py --task classification     # hymenoptera_sample: ants vs bees
    python benchmarks/small_tasks.py --task detection          # raccoon_sample: one class, COCO boxes
    python benchmarks/small_tasks.py --task classification --seeds 0 1 2 --only peer
    python benchmarks/small_tasks.py --task detection --dataset bccd --seeds 0 --threads 1
    python benchmarks/small_tasks.py --task instance --root SET --seeds 0   # a COCO instance set: polygons or RLE
    python benchmarks/small_tasks.py --task instance --root SET --only vitdense \
        --set model.init_args.optimizer.layer_decay=1.0 --variant layer_decay=1.0   # a template row with an override
    python benchmarks/small_tasks.py --task detection --dataset bccd --only vitdense \
        --also-infer '{"flip": true}' --also-infer '{"nms_thresh": 0.6}'   # + the same weights scored two more ways

``--dataset NAME`` reads a set that benchmarks/task_datasets.py built into /work/bench_data/tasks/NAME (sign_digits,
brain_mri, clothing: classification; bccd, kangaroo, deeppcb, aerial_cars: detection; cwfid_plants: instance), at the
budget in DATASETS below, and writes its rows to <out>/NAME/<task>.{json,md}. Where the set has a test split both
sides are also scored on it after the same last epoch (nothing is chosen on val or test: there is nothing to choose).
benchmarks/small_tasks_across.py gathers the sets into one table per task. ``--also-infer`` (detection) scores the
weights of each template run again another way (flipped views, NMS or score threshold): rows of their own, to compare
on val before any becomes the template's.

Both sides start from the same ImageNet ViT-Ti weights (../shared/weights/vit_tiny_patch16_224.safetensors), see
the same training images for the same epochs, batch and input size, and are scored on the same val split after the
last epoch (no checkpoint picked on val: on the shared samples val is the only held-out split).

- vitdense: the shipped template (configs/classification_folder.yaml, detection_coco.yaml or instance_coco.yaml)
  through the real CLI, with only the data root, the weights and the budget (--epochs, --size) set; --set overrides
  a template key and --variant names that row.
- peer: what a user writes by hand in ~40 lines: timm's ViT-Ti with a new linear head (classification) or
  torchvision's Faster R-CNN (detection) / Mask R-CNN (instance) on the ViT's last feature map (the torchvision
  tutorial's custom-backbone recipe), AdamW lr 1e-4, weight decay 0.05, cosine schedule, random-resized-crop / flip
  augmentation.

Rows (accuracy and macro F1; COCO mAP and mAP_50; or COCO mask mAP, mask mAP_50 and the box mAP, mAP_50; per seed
and their mean; each with its seconds, the fp32 matmul rate before it, the git commit and the command) go to
<out>/<task>.json and <out>/<task>.md. The samples are tiny (12 val images for classification, 8 for detection):
read the mean over seeds, and the spread between them.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import timm
import torch
import torch.nn.functional as F
from machine import matmul_gflops  # benchmarks/machine.py
from recipes import git_commit  # benchmarks/recipes.py
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vitdense.cli.entry import main as vitdense_main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WEIGHTS = SHARED / "weights" / "vit_tiny_patch16_224.safetensors"
TASKS = {
    "classification": {"root": SHARED / "data" / "hymenoptera_sample", "config": "classification_folder.yaml",
                       "epochs": 30, "batch": 16, "size": 224, "metrics": ("acc", "f1")},
    "detection": {"root": SHARED / "data" / "raccoon_sample", "config": "detection_coco.yaml",
                  "epochs": 24, "batch": 4, "size": 384, "metrics": ("mAP", "mAP_50")},
    # No shared instance sample: --root or --dataset. The metric first in the list is the one the tables compare.
    "instance": {"root": None, "config": "instance_coco.yaml",
                 "epochs": 24, "batch": 4, "size": 384, "metrics": ("mask_mAP", "mask_mAP_50", "mAP", "mAP_50")},
}  # fmt: skip
TASK_DATA = Path("/work/bench_data/tasks")  # benchmarks/task_datasets.py writes the extra sets here
# Budgets of the extra sets, at smaller inputs than the templates' so that one run takes minutes on one CPU thread:
# ViT-Ti at 112 is 49 tokens, about 4x cheaper than 224; the detector at 192 long side about 4x cheaper than at 384.
# Classification runs the template's own 30 epochs (210 steps of 16: its 50 warmup steps are a quarter of the run);
# the first runs took 10 (70 steps, most of them warmup: their rows are kept, named "@10x16, 112"). Detection: about
# the raccoon sample's 144 steps (24 x 6), at batch 1.
DATASETS = {
    "sign_digits": {"task": "classification", "epochs": 30, "size": 112, "batch": 16},  # 100 train images: 210 steps
    "brain_mri": {"task": "classification", "epochs": 30, "size": 112, "batch": 16},  # 100 train images: 210 steps
    "clothing": {"task": "classification", "epochs": 30, "size": 112, "batch": 16},  # 150 train images: 300 steps
    "bccd": {"task": "detection", "epochs": 4, "size": 192, "batch": 1},  # 32 train images: 128 steps
    "kangaroo": {"task": "detection", "epochs": 4, "size": 192, "batch": 1},  # 32 train images: 128 steps
    "deeppcb": {"task": "detection", "epochs": 4, "size": 192, "batch": 1},  # 32 train images: 128 steps
    # Vehicles are 2.6% of the long side (median): 5 px at 192, too few for any stride-16 map; 384 gives 10 px.
    "aerial_cars": {"task": "detection", "epochs": 4, "size": 384, "batch": 1},  # 32 train images: 128 steps
    "cwfid_plants": {"task": "instance", "epochs": 12, "size": 320, "batch": 2},  # 31 train images: 192 steps
}


def budget_suffix(epochs: int, batch: int, size: int, default: dict) -> str:
    """The row-name suffix of a run's budget: none at the set's default (``epochs``, ``batch``, ``size`` of
    ``default``), else `` @EPOCHSxBATCH, SIZE``, so that a run at another budget is a row of its own instead of
    replacing the default budget's seeds."""
    if (epochs, batch, size) == (default["epochs"], default["batch"], default["size"]):
        return ""
    return f" @{epochs}x{batch}, {size}"


def held_out_splits(root: Path) -> list[tuple[str, str]]:
    """(split, prefix of its metric names) of each split both sides are scored on: val, and test where the set has
    one (after the same last epoch; nothing is chosen on either)."""
    return [("val", ""), *([("test", "test_")] if (root / "test").is_dir() else [])]


def run_vitdense(
    task: str, args: argparse.Namespace, seed: int, work: Path
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Fine-tune the shipped template through the CLI; the val (and test) metrics after the last epoch, and those of
    the same weights scored again with each ``--also-infer`` change (by its label)."""
    spec = TASKS[task]
    argv = [
        "fit", "--config", str(REPO / "configs" / spec["config"]), "--seed_everything", str(seed),
        "--data.root", str(args.root), "--model.backbone.pretrained", str(args.weights),
        "--data.batch_size", str(args.batch or spec["batch"]), "--data.num_workers", "0",
        "--data.image_size", str(args.size or spec["size"]),
        "--trainer.max_epochs", str(args.epochs), "--trainer.check_val_every_n_epoch", str(args.epochs),
        "--trainer.default_root_dir", str(work),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
        "--trainer.logger", "false",
    ]  # fmt: skip
    for item in args.set or []:
        key, _, value = item.partition("=")
        argv += [f"--{key}", value]
    cli = vitdense_main(argv)
    scores = logged_scores(cli, "val", spec["metrics"]) | scores_on_test(cli, args.root, spec["metrics"])
    rescored = {}
    for change in args.also_infer or []:
        set_detection_inference(cli.model, change)
        cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
        again = logged_scores(cli, "val", spec["metrics"]) | scores_on_test(cli, args.root, spec["metrics"])
        rescored[inference_label(change)] = again
    return scores, rescored


def scores_on_test(cli: Any, root: Path, metrics: tuple[str, ...]) -> dict[str, float]:
    """The model's test metrics (``test_<metric>``) where the set has a test split, else none."""
    if ("test", "test_") not in held_out_splits(root):
        return {}
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    return logged_scores(cli, "test", metrics)


def logged_scores(cli: Any, split: str, metrics: tuple[str, ...]) -> dict[str, float]:
    """The metrics the last val or test pass logged, under the rows' keys (val: ``mAP``; test: ``test_mAP``)."""
    prefix = "" if split == "val" else f"{split}_"
    return {f"{prefix}{m}": float(cli.trainer.callback_metrics[f"{split}/{m}"]) for m in metrics}


# Head keys that change only which boxes a trained detector keeps (the rest of ``--also-infer`` is ``inference``).
POSTPROCESS_KEYS = ("score_thresh", "nms_thresh", "detections_per_img")


def set_detection_inference(model: Any, change: dict[str, Any]) -> None:
    """Make a trained DetectionTask score another way: ``change``'s POSTPROCESS_KEYS set on its detector (torchvision
    keeps them on ``roi_heads`` for the two-stage heads, on itself for RetinaNet and FCOS) and its other keys on the
    ``inference`` setting (mode, crop, stride, flip). The weights are not touched."""
    from vitdense.models.config import merge_config
    from vitdense.tasks.inference import check_detection_inference_config

    head = {k: v for k, v in change.items() if k in POSTPROCESS_KEYS}
    inference = {k: v for k, v in change.items() if k not in POSTPROCESS_KEYS}
    model.inference_cfg = merge_config(inference, dict(model.inference_cfg), "inference")
    check_detection_inference_config(model.inference_cfg, model.input_size())
    model.head_cfg.update(head)  # nms_thresh also merges flipped views and tiles
    owner = getattr(model.detector, "roi_heads", model.detector)
    for key, value in head.items():
        setattr(owner, key, value)


def inference_label(change: dict[str, Any]) -> str:
    """``--also-infer``'s row label: ``inference flip=true,score_thresh=0.001``."""
    return "inference " + ",".join(f"{k}={json.dumps(v)}" for k, v in change.items())


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

    root, size = args.root, args.size or 224
    norm = T.Normalize([0.5] * 3, [0.5] * 3)
    train_tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    val_tf = T.Compose([T.Resize(int(size / 0.875)), T.CenterCrop(size), T.ToTensor(), norm])
    train = datasets.ImageFolder(root / "train", train_tf)
    model = vit_tiny(args.weights, num_classes=len(train.classes), img_size=size)
    loader = DataLoader(train, batch_size=args.batch or 16, shuffle=True)
    epochs = args.epochs
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
    scores = {}
    for split, prefix in held_out_splits(root):
        held_out = datasets.ImageFolder(root / split, val_tf)
        assert held_out.classes == train.classes, f"{root / split}: other class folders than train"
        with torch.no_grad():
            pred = torch.cat([model(x).argmax(1) for x, _ in DataLoader(held_out, batch_size=16)])
        truth, k = torch.tensor(held_out.targets), len(train.classes)
        f1 = multiclass_f1_score(pred, truth, num_classes=k, average="macro")
        scores |= {f"{prefix}acc": float((pred == truth).float().mean()), f"{prefix}f1": float(f1)}
    return scores


def coco_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """An annotation's 0/1 mask from its polygons or RLE, as pycocotools' ``COCO.annToMask`` makes it."""
    from pycocotools import mask as mask_utils

    rle = segmentation
    if isinstance(segmentation, list):  # polygons: one RLE each, merged
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    return mask_utils.decode(rle)


class CocoObjects(Dataset):
    """Images, xyxy boxes and labels 1..K (categories in id order) of a COCO file, and with ``masks`` each object's
    0/1 mask (``coco_mask``); training flips half of them."""

    def __init__(self, folder: Path, train: bool, masks: bool = False) -> None:
        data = json.loads((folder / "annotations.json").read_text())
        self.folder, self.train, self.masks = folder / "images", train, masks
        self.images = data["images"]
        self.label_of = {c["id"]: i + 1 for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
        self.anns: dict[int, list[dict]] = {img["id"]: [] for img in self.images}
        for ann in data["annotations"]:
            self.anns[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from PIL import Image
        from torchvision.transforms.functional import to_tensor

        img, anns = self.images[i], self.anns[self.images[i]["id"]]
        image = to_tensor(Image.open(self.folder / img["file_name"]).convert("RGB"))
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=torch.float32)
        labels = torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        target = {"boxes": boxes.reshape(-1, 4), "labels": labels}
        if self.masks:
            h, w = image.shape[-2:]
            masks = [torch.from_numpy(coco_mask(a["segmentation"], h, w)) for a in anns]
            target["masks"] = torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=torch.uint8)
        if self.train and torch.rand(()) < 0.5:
            image, boxes = image.flip(-1), target["boxes"]
            target["boxes"] = torch.stack([image.shape[-1] - boxes[:, 2], boxes[:, 1], image.shape[-1] - boxes[:, 0],
                                           boxes[:, 3]], 1)  # fmt: skip
            if self.masks:
                target["masks"] = target["masks"].flip(-1)
        return image, target


class LastMap(nn.Module):
    """ViT-Ti's last block as one stride-16 map (the torchvision tutorial's single-map custom backbone)."""

    def __init__(self, weights: Path, size: int) -> None:
        super().__init__()
        self.vit = vit_tiny(weights, num_classes=0, img_size=size, dynamic_img_size=True)
        self.out_channels = self.vit.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_intermediates(x, indices=1, output_fmt="NCHW", intermediates_only=True)[-1]


def peer_detection(args: argparse.Namespace, seed: int) -> dict[str, float]:
    """torchvision's Faster R-CNN on ViT-Ti's last map; COCO box mAP."""
    return peer_rcnn(args, masks=False)


def peer_instance(args: argparse.Namespace, seed: int) -> dict[str, float]:
    """torchvision's Mask R-CNN: peer_detection's model, loop and augmentation with a mask head (the tutorial's 14x14
    RoIAlign on the one map); COCO mask and box mAP, masks at probability > 0.5 (the template's mask_thresh)."""
    return peer_rcnn(args, masks=True)


def peer_rcnn(args: argparse.Namespace, masks: bool) -> dict[str, float]:
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    root, size = args.root, args.size or TASKS[args.task]["size"]
    train = CocoObjects(root / "train", train=True, masks=masks)
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    mask_head = {"mask_roi_pool": MultiScaleRoIAlign(featmap_names=["0"], output_size=14, sampling_ratio=2)}
    model = (MaskRCNN if masks else FasterRCNN)(
        LastMap(args.weights, size), num_classes=len(train.label_of) + 1, rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2),
        min_size=size, max_size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3, size_divisible=16,
        **(mask_head if masks else {}),
    )  # fmt: skip
    loader = DataLoader(train, batch_size=args.batch or TASKS[args.task]["batch"], shuffle=True,
                        collate_fn=lambda b: tuple(zip(*b)))  # fmt: skip
    epochs = args.epochs
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
    scores = {}
    for split, prefix in held_out_splits(root):
        scores |= coco_map(model, CocoObjects(root / split, train=False, masks=masks), prefix)
    return scores


def coco_map(model: Any, data: CocoObjects, prefix: str) -> dict[str, float]:
    """COCO box mAP and mAP_50 of ``model`` (a list of images -> torchvision's detections) over ``data``, and the mask
    ones (``mask_mAP``, ``mask_mAP_50``; masks at probability > 0.5, the template's mask_thresh) if it reads masks."""
    from torchmetrics.detection import MeanAveragePrecision

    kinds = [("bbox", "")] + ([("segm", "mask_")] if data.masks else [])  # (torchmetrics' iou_type, our prefix)
    metric = MeanAveragePrecision(box_format="xyxy", iou_type=tuple(kind for kind, _ in kinds))
    with torch.no_grad():
        for image, target in data:
            pred = model([image])
            if data.masks:
                pred = [{**p, "masks": p["masks"][:, 0] > 0.5} for p in pred]
                target = {**target, "masks": target["masks"].bool()}
            metric.update(pred, [target])
    out = metric.compute()
    # torchmetrics prefixes its keys by kind when it scores more than one
    return {f"{prefix}{name}mAP{m[3:]}": float(out[f"{kind}_{m}" if data.masks else m])
            for kind, name in kinds for m in ("map", "map_50")}  # fmt: skip


# ---- driver --------------------------------------------------------------------------------------------------------

PEERS = {"classification": peer_classification, "detection": peer_detection, "instance": peer_instance}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", choices=("vitdense", "peer"), help="run one side only (rows of the other are kept)")
    p.add_argument("--dataset", choices=sorted(DATASETS), help="an extra set of benchmarks/task_datasets.py")
    p.add_argument("--root", type=Path, help="dataset root (default: the shared sample of the task, or the --dataset)")
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--epochs", type=int, help="training epochs (default: the task's in TASKS; DATASETS)")
    p.add_argument("--batch", type=int, help="batch size (default: the template's)")
    p.add_argument("--size", type=int, help="input size (default: the task's in TASKS, long side for boxes)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="CLI override of the vitdense side, repeatable (e.g. model.init_args.optimizer.head_lr_mult=10)",
    )
    p.add_argument("--variant", help="name of the vitdense row when --set changes the template")
    p.add_argument(
        "--also-infer",
        action="append",
        type=json.loads,
        metavar="JSON",
        help="detection: after a vitdense run, score its weights again with these inference keys (flip, mode, ...) or "
        "box post-processing keys (score_thresh, nms_thresh, detections_per_img), e.g. '{\"flip\": true}'; each is "
        "a row '<row>, inference key=value' with same_run_as <row>",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "small_tasks")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    spec = TASKS[args.task]
    if args.dataset:
        if DATASETS[args.dataset]["task"] != args.task:
            p.error(f"--dataset {args.dataset} is a {DATASETS[args.dataset]['task']} set, not {args.task}")
        args.root = args.root or TASK_DATA / args.dataset
        args.epochs = args.epochs or DATASETS[args.dataset]["epochs"]
        args.size = args.size or DATASETS[args.dataset]["size"]
        args.batch = args.batch or DATASETS[args.dataset]["batch"]
        args.out = args.out / args.dataset
        if not (args.root / "train").is_dir():
            p.error(
                f"'{args.root}' holds no train/: build it first (python benchmarks/task_datasets.py {args.dataset})"
            )
    args.root, args.epochs = args.root or spec["root"], args.epochs or spec["epochs"]
    if args.root is None:
        p.error(f"--task {args.task} has no shared sample: give --root (a COCO layout) or --dataset")
    if args.also_infer and args.task != "detection":
        p.error("--also-infer scores a detector again: it needs --task detection")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.task}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    sides = [args.only] if args.only else ["vitdense", "peer"]
    default = DATASETS[args.dataset] if args.dataset else spec
    suffix = budget_suffix(args.epochs, args.batch or spec["batch"], args.size or spec["size"], default)
    for side in sides:
        row_name = (f"vitdense, {args.variant}" if side == "vitdense" and args.variant else side) + suffix
        for seed in args.seeds:
            gflops, commit = matmul_gflops(), git_commit()  # the machine and the code this run starts from
            start = time.perf_counter()
            L.seed_everything(seed)
            rescored: dict[str, dict[str, float]] = {}
            with tempfile.TemporaryDirectory() as work:
                if side == "vitdense":
                    scores, rescored = run_vitdense(args.task, args, seed, Path(work))
                else:
                    scores = PEERS[args.task](args, seed)
            row = {**scores, "seconds": round(time.perf_counter() - start, 1), "gflops": round(gflops, 1),
                   "epochs": args.epochs, "batch": args.batch or spec["batch"],
                   "size": args.size or spec["size"], "commit": commit,
                   "command": shlex.join(["python", "benchmarks/small_tasks.py", *sys.argv[1:]])}  # fmt: skip
            base = row_name.removesuffix(suffix)
            for name, again in [(base, scores), *((f"{base}, {label}", s) for label, s in rescored.items())]:
                # the budget suffix stays last: the across table reads the budget from it
                same_run = {"same_run_as": base + suffix} if name != base else {}
                results.setdefault(name + suffix, {})[str(seed)] = {**row, **again, **same_run}
                print(f"[small_tasks] {args.task} {name + suffix} seed {seed}: {row | again}", flush=True)
            path.write_text(json.dumps(results, indent=1))
    write_table(args, results, spec["metrics"])


def write_table(args: argparse.Namespace, results: dict, val_metrics: tuple[str, ...]) -> None:
    """<out>/<task>.md: one row per side and seed, and the mean of each side; test columns where there are scores."""
    has_test = any(f"test_{val_metrics[0]}" in r for rows in results.values() for r in rows.values())
    metrics = [*val_metrics, *(f"test_{m}" for m in val_metrics if has_test)]
    if not has_test:  # the shared samples' table, as it was
        title = f"# {args.task}: vitdense template vs plain loop ({', '.join(val_metrics)} on val, last epoch)"
    else:
        title = f"# {args.task}, {args.root.name}: vitdense template vs plain loop (val and test, last epoch)"
    lines = [title, "", "| side | seed | " + " | ".join(m.replace("_", " ", 1) if m.startswith("test") else m
                                                        for m in metrics)
             + " | seconds | GFLOP/s | epochs x batch | size |", "| --- " * (len(metrics) + 6) + "|"]  # fmt: skip
    for side, rows in results.items():
        for seed, r in sorted(rows.items()):
            vals = " | ".join(f"{r[m]:.3f}" if m in r else "" for m in metrics)
            lines.append(f"| {side} | {seed} | {vals} | {r['seconds']:.0f} | {r['gflops']:.0f} | "
                         f"{r['epochs']}x{r['batch']} | {r['size']} |")  # fmt: skip
        means = " | ".join(f"**{statistics.mean(r[m] for r in rows.values()):.3f}**"
                           if all(m in r for r in rows.values()) else "" for m in metrics)  # fmt: skip
        lines.append(f"| {side} | mean of {len(rows)} | {means} | | | | |")
    (args.out / f"{args.task}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
