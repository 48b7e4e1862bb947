"""The field's own segmentation trainers as peers of vitdense's template, on the domains of benchmarks/domains.py.

    python benchmarks/field_trainers.py --setup        # once, with vitdense's python: makes /work/peer-venv
    /work/peer-venv/bin/python benchmarks/field_trainers.py --domain cwfid --peer torchgeo-dpt
    /work/peer-venv/bin/python benchmarks/field_trainers.py --domain all --peer all --seed 1
    /work/peer-venv/bin/python benchmarks/field_trainers.py --domain cwfid --peer all --steps 5 --threads 1 \\
        --eval-limit 2 --out /tmp/field_smoke            # a smoke test: scratch rows, 2 images per eval split

Each peer is the library's own LightningModule, trained by a Lightning ``Trainer(max_steps=...)`` with its own loss,
optimizer, scheduler and metrics; only the data comes from here:
``<data-root>/<domain>/{train,val,test}/{images,masks}`` with classes and void id from ``domain.json``, served by a
small DataModule as the batch dicts both tasks read, ``{"image": float (B, 3, H, W), "mask": long (B, H, W)}``.

- ``torchgeo-defaults``: ``torchgeo.trainers.SemanticSegmentationTask()`` as it comes: smp U-Net on resnet50 with
  ``weights=None`` (random init; ``weights=True`` would download smp's ImageNet resnet50: not offline), ce loss,
  AdamW lr 1e-3, ReduceLROnPlateau(val_loss, patience 10).
- ``torchgeo-dpt``: the same task with its ViT pairing, ``model="dpt", backbone="tu-vit_tiny_patch16_224"`` (smp's
  default DPT decoder), the shared ViT-Ti weights loaded into the encoder (strict; torchgeo's ``weights`` path takes a
  Lightning checkpoint, not a timm state dict); its defaults otherwise.
- ``terratorch-upernet``: ``terratorch.tasks.SemanticSegmentationTask(model_factory="EncoderDecoderFactory")`` with a
  timm ViT-Ti backbone (the shared weights through timm's ``pretrained_cfg_overlay``), ``out_indices`` 2,5,8,11, the
  neck ``LearnedInterpolateToPyramidal``, ``UperNetDecoder`` with 128 channels; ce loss, AdamW lr 1e-4 with weight
  decay 0.05, ReduceLROnPlateau(val/loss).

terratorch's recipe is its documented one for a plain ViT: the necks of docs/guide/quick_start.md (token reshaping is
timm's own here: a timm backbone gives NCHW maps), the UperNet of examples/confs/prithvi_tiny_finetune_chesapeake.yaml
(its ViT-Tiny example: out_indices 2,5,8,11, decoder_channels 128; its ``decoder_scale_modules`` is deprecated for the
LearnedInterpolateToPyramidal neck) and quick_start.md's AdamW 1e-4 with weight decay 0.05 and ReduceLROnPlateau.

The budget and the scoring are the template's (benchmarks/recipes.py): --steps optimizer steps of --batch random
--crop crops (each picked image padded to the crop, void in the mask), horizontal flip; the ViT peers normalise with
the ViT's pretrained_cfg mean/std, torchgeo's defaults with torchgeo's own default (pixel / 255). One epoch is the whole
budget (images drawn with replacement), so the one validation runs after the last step, as in the template; the
plateau schedulers therefore never lower the lr (with an epoch a dataset pass they would, after 10 flat validations).
Val and test are whole images at full resolution, one per batch: torchgeo's images are zero-padded to a multiple of 32
(its smp models refuse other sizes; the padded pixels are void), terratorch pads and crops back itself. The scores
are one confusion matrix per split over the logits of the task's own validation_step/test_step (a forward hook, so
each image runs once): void ignored, mIoU the mean over classes present in the ground truth or the predictions, as
vitdense and benchmarks/peer_loop.py score. The task's own logged metrics are kept in the row beside them.

Differences from the template that stay: the template also rescales (0.5..2) and colour-jitters its crops; the
torchgeo ViT-Ti is built for 224 inputs, so timm's dynamic-size flags are switched on after construction (identical
at 224, what lets it see whole images); torchgeo's DPT keeps smp's default decoder (~29M parameters: torchgeo has no
argument for a smaller one), where peer_loop.py uses a CPU-sized one.

Rows go to ``<out>/<domain>/results.json`` (the file benchmarks/recipes.py writes) named ``field: <peer>`` (``,
seed=N`` after seed 0); benchmarks/across_domains.py lists them beside the plain-loop peer. torchgeo and terratorch
are never dependencies of vitdense: --setup makes a virtualenv that sees vitdense's torch and lightning (a .pth file)
and installs the two there, with every package vitdense's environment has pinned to its installed version.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import Timer
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from --weights; never wait on the hub

from machine import matmul_gflops  # benchmarks/machine.py
from recipes import DATA_ROOT, REPO, SHARED, domain_names, git_commit, has_split, save_row

VENV = Path("/work/peer-venv")
PINS = ("torchgeo==0.8.1", "terratorch==1.2.11")  # the newest that install on Python 3.11 (0.9+ / 1.2.12+ need 3.12)
FIELD = "field: "  # row-name prefix of these peers (benchmarks/across_domains.py lists them as peers)
VIT = "vit_tiny_patch16_224"


def field_row_name(label: str, seed: int) -> str:
    """A peer's row: ``field: <label>`` at seed 0, ``field: <label>, seed=N`` else (as recipes.py names its peer)."""
    return f"{FIELD}{label}" + (f", seed={seed}" if seed else "")


def scores(cm: torch.Tensor) -> dict[str, Any]:
    """mIoU (classes present in ground truth or predictions), pixel accuracy and per-class IoU (None where absent)
    of a confusion matrix ``cm[truth, prediction]``."""
    cm = cm.double()
    union = cm.sum(0) + cm.sum(1) - cm.diag()
    present = union > 0
    iou = cm.diag() / union.clamp(min=1)
    return {
        "mIoU": iou[present].mean().item() if present.any() else float("nan"),
        "pixel_acc": (cm.diag().sum() / cm.sum().clamp(min=1)).item(),
        "iou": [v if ok else None for v, ok in zip(iou.tolist(), present.tolist())],
    }


def confusion(logits: torch.Tensor, mask: torch.Tensor, num_classes: int, void: int) -> torch.Tensor:
    """Confusion matrix of the argmax of ``logits`` (B, K, H, W) against ``mask`` (B, H, W); void pixels left out."""
    if logits.shape[-2:] != mask.shape[-2:]:
        raise ValueError(f"logits {tuple(logits.shape)} do not cover the mask {tuple(mask.shape)}")
    truth, pred = mask.flatten().long(), logits.argmax(1).flatten()
    keep = truth != void
    truth, pred = truth[keep], pred[keep]
    if truth.numel() and int(truth.max()) >= num_classes:
        raise ValueError(f"mask value {int(truth.max())} is neither a class (0..{num_classes - 1}) nor void {void}")
    return torch.bincount(truth * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes).cpu()


# --- the peers ---------------------------------------------------------------------------------------------------


def vit_mean_std() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The ViT-Ti weights' normalisation (timm's pretrained_cfg), in pixel units."""
    import timm

    cfg = timm.models.get_pretrained_cfg(VIT)
    return tuple(255 * m for m in cfg.mean), tuple(255 * s for s in cfg.std)


def any_input_size(vit: torch.nn.Module) -> None:
    """Switch on what timm's ``dynamic_img_size=True`` would have set at construction (torchgeo builds its smp DPT
    without it, for 224 inputs only): the pos-embed is resampled to the input's grid, which leaves 224 inputs as they
    were and lets whole images through."""
    from timm.layers import Format

    vit.dynamic_img_size = True
    vit.patch_embed.strict_img_size = False
    vit.patch_embed.flatten = False
    vit.patch_embed.output_fmt = Format.NHWC


def torchgeo_defaults(args: argparse.Namespace, meta: dict) -> LightningModule:
    from torchgeo.trainers import SemanticSegmentationTask

    return SemanticSegmentationTask(num_classes=meta["num_classes"], ignore_index=meta["ignore_index"])


def torchgeo_dpt(args: argparse.Namespace, meta: dict) -> LightningModule:
    from safetensors.torch import load_file
    from torchgeo.trainers import SemanticSegmentationTask

    task = SemanticSegmentationTask(
        model="dpt", backbone=f"tu-{VIT}", num_classes=meta["num_classes"], ignore_index=meta["ignore_index"]
    )
    vit = task.model.encoder.model  # smp's TimmViTEncoder holds the timm model
    vit.load_state_dict(load_file(args.weights), strict=True)  # torchgeo's `weights` path wants a Lightning ckpt
    any_input_size(vit)
    return task


def terratorch_upernet(args: argparse.Namespace, meta: dict) -> LightningModule:
    from terratorch.tasks import SemanticSegmentationTask

    model_args = {
        "backbone": f"timm_{VIT}",
        "backbone_pretrained": True,
        "backbone_pretrained_cfg_overlay": {"file": str(args.weights)},
        "backbone_out_indices": [2, 5, 8, 11],
        "backbone_dynamic_img_size": True,
        "necks": [{"name": "LearnedInterpolateToPyramidal"}],
        "decoder": "UperNetDecoder",
        "decoder_channels": 128,
        "num_classes": meta["num_classes"],
    }
    return SemanticSegmentationTask(
        model_factory="EncoderDecoderFactory",
        model_args=model_args,
        loss="ce",
        ignore_index=meta["ignore_index"],
        lr=1e-4,
        optimizer="AdamW",
        optimizer_hparams={"weight_decay": 0.05},
        scheduler="ReduceLROnPlateau",
        class_names=list(meta["classes"]),
    )


@dataclass(frozen=True)
class Peer:
    label: str  # the row name after "field: "
    library: str  # the pip distribution whose version the row records
    build: Callable[[argparse.Namespace, dict], LightningModule]
    vit: bool  # normalised as the ViT-Ti weights; else pixel / 255 (torchgeo's default)
    pad: int  # eval images zero-padded to a multiple of this (void in the mask); 0: the task pads itself
    notes: str


PEERS = {
    "torchgeo-defaults": Peer(
        "torchgeo unet-resnet50 defaults (random init)", "torchgeo", torchgeo_defaults, False, 32,
        "SemanticSegmentationTask() defaults: unet, resnet50, weights=None (random init; smp's ImageNet resnet50 "
        "is a download, not available offline), ce, AdamW lr 1e-3, ReduceLROnPlateau(val_loss, patience 10)",
    ),
    "torchgeo-dpt": Peer(
        "torchgeo dpt-vit_tiny", "torchgeo", torchgeo_dpt, True, 32,
        "SemanticSegmentationTask(model='dpt', backbone='tu-vit_tiny_patch16_224'), smp's default DPT decoder; "
        "shared ViT-Ti weights loaded into the encoder (strict); timm dynamic size switched on for whole images; "
        "defaults otherwise (ce, AdamW lr 1e-3, ReduceLROnPlateau)",
    ),
    "terratorch-upernet": Peer(
        "terratorch upernet-vit_tiny", "terratorch", terratorch_upernet, True, 0,
        "SemanticSegmentationTask(EncoderDecoderFactory): timm vit_tiny_patch16_224 (shared weights), out_indices "
        "2,5,8,11, neck LearnedInterpolateToPyramidal, UperNetDecoder(channels=128), ce, AdamW lr 1e-4 wd 0.05, "
        "ReduceLROnPlateau(val/loss)",
    ),
}  # fmt: skip


# --- data ----------------------------------------------------------------------------------------------------------


def read_split(root: Path, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB image, class-id mask) pairs of ``root/split``, masks by stem as ``masks/<stem>.png``."""
    pairs = []
    for image in sorted((root / split / "images").iterdir()):
        mask = root / split / "masks" / f"{image.stem}.png"
        pairs.append((np.asarray(Image.open(image).convert("RGB")), np.asarray(Image.open(mask))))
    return pairs


def normalise(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    x = (image.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


def pad_to(image: np.ndarray, mask: np.ndarray, h: int, w: int, void: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and ``mask`` padded at the bottom and right to at least ``h`` x ``w`` (zeros; void in the mask)."""
    ph, pw = max(0, h - image.shape[0]), max(0, w - image.shape[1])
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=void)
    return image, mask


class TrainCrops(Dataset):
    """A random ``crop`` x ``crop`` window of image ``i`` (padded to the crop first), flipped with probability 1/2."""

    def __init__(self, pairs: list, crop: int, void: int, mean: tuple, std: tuple, seed: int) -> None:
        self.pairs, self.crop, self.void, self.mean, self.std = pairs, crop, void, mean, std
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, mask = pad_to(*self.pairs[i], self.crop, self.crop, self.void)
        y = int(self.rng.integers(0, image.shape[0] - self.crop + 1))
        x = int(self.rng.integers(0, image.shape[1] - self.crop + 1))
        image, mask = image[y : y + self.crop, x : x + self.crop], mask[y : y + self.crop, x : x + self.crop]
        if self.rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        return {"image": normalise(image, self.mean, self.std), "mask": torch.from_numpy(mask.astype(np.int64))}


class WholeImages(Dataset):
    """Whole images at full resolution, zero-padded to a multiple of ``pad`` where ``pad`` > 0 (void in the mask)."""

    def __init__(self, pairs: list, void: int, mean: tuple, std: tuple, pad: int) -> None:
        self.pairs, self.void, self.mean, self.std, self.pad = pairs, void, mean, std, pad

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, mask = self.pairs[i]
        if self.pad:
            h, w = (-(-n // self.pad) * self.pad for n in mask.shape[:2])
            image, mask = pad_to(image, mask, h, w, self.void)
        return {"image": normalise(image, self.mean, self.std), "mask": torch.from_numpy(mask.astype(np.int64))}


class DomainData(LightningDataModule):
    """One domain for a peer: ``steps * batch`` training crops drawn with replacement (one epoch = the budget), and
    whole val/test images one per batch."""

    def __init__(self, root: Path, meta: dict, peer: Peer, args: argparse.Namespace) -> None:
        super().__init__()
        self.root, self.void, self.peer, self.args = root, meta["ignore_index"], peer, args
        self.mean, self.std = vit_mean_std() if peer.vit else ((0.0,) * 3, (255.0,) * 3)

    def train_dataloader(self) -> DataLoader:
        a = self.args
        crops = TrainCrops(read_split(self.root, "train"), a.crop, self.void, self.mean, self.std, a.seed)
        draws = RandomSampler(crops, replacement=True, num_samples=a.steps * a.batch,
                              generator=torch.Generator().manual_seed(a.seed))  # fmt: skip
        return DataLoader(crops, batch_size=a.batch, sampler=draws, drop_last=True)

    def _whole(self, split: str) -> DataLoader:
        images = WholeImages(read_split(self.root, split), self.void, self.mean, self.std, self.peer.pad)
        return DataLoader(images, batch_size=1)

    def val_dataloader(self) -> DataLoader:
        return self._whole("val")

    def test_dataloader(self) -> DataLoader:
        return self._whole("test")


class ConfusionScorer(Callback):
    """One confusion matrix per split over the logits of the task's own validation_step / test_step, read by a forward
    hook on the task (torchgeo returns the logits, terratorch a ModelOutput holding them)."""

    def __init__(self, num_classes: int, void: int) -> None:
        self.num_classes, self.void = num_classes, void
        self.cm: dict[str, torch.Tensor] = {}
        self.images: dict[str, int] = {}
        self._logits: torch.Tensor | None = None
        self._hook: Any = None

    def _keep(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        self._logits = getattr(output, "output", output)

    def _start(self, pl_module: LightningModule, split: str) -> None:
        self.cm[split] = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        self.images[split] = 0
        self._hook = pl_module.register_forward_hook(self._keep)

    def _batch(self, split: str, batch: dict) -> None:
        if self._logits is None:
            raise RuntimeError(f"the task's {split} step ran no forward pass that the scorer saw")
        self.cm[split] += confusion(self._logits.detach(), batch["mask"], self.num_classes, self.void)
        self.images[split] += len(batch["mask"])
        self._logits = None

    def _end(self) -> None:
        self._hook.remove()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(pl_module, "val")

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        self._batch("val", batch)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end()

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(pl_module, "test")

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        self._batch("test", batch)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end()


# --- one run, one row ----------------------------------------------------------------------------------------------


def own_metrics(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """The task's own logged loss and IoU summaries (not per class), for comparison with ours."""
    wanted = re.compile(r"^(val|test)[_/](loss|mIoU|mIoU_Micro|JaccardIndex|MulticlassJaccardIndex)$")
    return {k: float(v) for k, v in metrics.items() if wanted.match(k)}


def split_row(prefix: str, cm: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    """The row keys of one scored split: ``mIoU``/``pixel_acc``/``iou`` for val, ``test_...`` for test."""
    s = scores(cm)
    return {f"{prefix}mIoU": s["mIoU"], f"{prefix}pixel_acc": s["pixel_acc"],
            f"{prefix}iou": dict(zip(class_names, s["iou"], strict=True))}  # fmt: skip


def run_peer(key: str, domain: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``PEERS[key]`` on ``domain`` for the budget, score val and test; return its results row."""
    peer, root = PEERS[key], args.data_root / domain
    meta = json.loads((root / "domain.json").read_text())
    class_names, void = list(meta["classes"]), meta["ignore_index"]
    commit, gflops = git_commit(), matmul_gflops()
    start = time.perf_counter()
    seed_everything(args.seed, verbose=False)
    task = peer.build(args, meta)
    data = DomainData(root, meta, peer, args)
    scorer, timer = ConfusionScorer(len(class_names), void), Timer(interval="step")
    limit = args.eval_limit if args.eval_limit else 1.0
    trainer = Trainer(
        accelerator="cpu", devices=1, precision=32, max_steps=args.steps, max_epochs=1, num_sanity_val_steps=0,
        limit_val_batches=limit, limit_test_batches=limit, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer, scorer],
        default_root_dir=str(args.out / domain / "field_runs" / key),
    )  # fmt: skip
    trainer.fit(task, datamodule=data)
    if trainer.global_step != args.steps or "val" not in scorer.cm:
        raise SystemExit(f"{key}: ran {trainer.global_step} of {args.steps} steps, validation: {'val' in scorer.cm}")
    train_s, val_s = timer.time_elapsed("train") - timer.time_elapsed("validate"), timer.time_elapsed("validate")
    own = own_metrics(trainer.callback_metrics)
    row: dict[str, Any] = {"domain": domain, "name": field_row_name(peer.label, args.seed)}
    row |= split_row("", scorer.cm["val"], class_names)
    test_s = None
    if has_split(root, "test"):
        test_start = time.perf_counter()
        trainer.test(task, datamodule=data, verbose=False)
        test_s = time.perf_counter() - test_start
        row |= split_row("test_", scorer.cm["test"], class_names)
        own |= own_metrics(trainer.callback_metrics)
    versions = {name: metadata.version(name) for name in (peer.library, "torch", "lightning", "timm",
                                                          "segmentation_models_pytorch")}  # fmt: skip
    return row | {
        "train_s": train_s, "val_s": val_s, "test_s": test_s, "total_s": time.perf_counter() - start,
        "gflops": gflops, "threads": torch.get_num_threads(), "steps": trainer.global_step, "batch": args.batch,
        "crop": args.crop, "seed": args.seed, "eval_images": dict(scorer.images), "commit": commit,
        "peer": key, "versions": versions, "notes": peer.notes, "own_metrics": own,
        "command": shlex.join(["python", "benchmarks/field_trainers.py", *sys.argv[1:]]),
    }  # fmt: skip


# --- the separate environment --------------------------------------------------------------------------------------


def setup(venv: Path) -> None:
    """Make ``venv``: a virtualenv that sees this interpreter's packages (torch, lightning, vitdense) through a .pth
    file, with torchgeo and terratorch installed into it. Every package of this environment is a pip constraint at
    its installed version, so pip adds packages beside them and never replaces torch."""
    here = sysconfig.get_paths()["purelib"]
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    # addsitedir (not a bare path) also runs this environment's own .pth files: the editable vitdense among them
    (Path(site) / "vitdense-env.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    pins = [line for line in freeze.splitlines() if re.fullmatch(r"[A-Za-z0-9_.\-]+==\S+", line)]
    constraints = venv / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    subprocess.run([python, "-m", "pip", "install", "-c", str(constraints), *PINS], check=True)
    subprocess.run([python, "-m", "pip", "check"], check=False)
    shown = ["torchgeo", "terratorch", "torch", "lightning", "timm", "segmentation_models_pytorch"]
    script = f"from importlib.metadata import version; print(', '.join(f'{{n}} {{version(n)}}' for n in {shown!r}))"
    subprocess.run([python, "-c", script], check=True)
    print(f"peers: {python} benchmarks/field_trainers.py --domain <name> --peer all")


# --- command line --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--setup", action="store_true", help=f"make --venv with {' and '.join(PINS)} (run with vitdense's python)")
    add("--venv", type=Path, default=VENV, help="the peers' virtualenv")
    add("--peer", default="all", choices=[*PEERS, "all"], help="which peer(s) to run")
    add("--domain", default="all", help="a domain under --data-root (benchmarks/domains.py), or 'all'")
    add("--data-root", type=Path, default=DATA_ROOT, help="where benchmarks/domains.py wrote the domains")
    add("--weights", type=Path, default=SHARED / "weights" / f"{VIT}.safetensors", help="ViT-Ti ImageNet weights")
    add("--steps", type=int, default=600, help="optimizer steps (Trainer max_steps)")
    add("--batch", type=int, default=8, help="training batch size")
    add("--crop", type=int, default=224, help="training crop side")
    add("--seed", type=int, default=0, help="seed_everything and the crop/draw generators")
    add("--threads", type=int, default=2, help="torch threads")
    add("--eval-limit", type=int, default=0, help="score only the first N images of val and test (0 = all; smoke)")
    add("--out", type=Path, default=REPO / "benchmarks" / "results" / "recipes", help="rows: <out>/<domain>/")
    return p


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.setup:
        setup(args.venv)
        return
    if args.eval_limit and args.out == parser.get_default("out"):
        raise SystemExit("--eval-limit scores part of val and test: pass a scratch --out, not the benchmark's rows.")
    missing = [lib for lib in ("torchgeo", "terratorch") if not _installed(lib)]
    if missing:
        raise SystemExit(f"{' and '.join(missing)} not found: run `python benchmarks/field_trainers.py --setup`, "
                         f"then this script with {args.venv / 'bin' / 'python'}.")  # fmt: skip
    if not args.weights.is_file():
        raise SystemExit(f"weights '{args.weights}' not found: pass --weights.")
    torch.set_num_threads(args.threads)
    keys = list(PEERS) if args.peer == "all" else [args.peer]
    for domain in domain_names(args.data_root, args.domain):
        meta = json.loads((args.data_root / domain / "domain.json").read_text())
        for key in keys:
            print(f"\n=== {domain} ({meta['domain']}): {key}", flush=True)
            row = run_peer(key, domain, args)
            save_row(args.out / domain, row, list(meta["classes"]), meta)
            test = f", test {row['test_mIoU']:.4f}" if "test_mIoU" in row else ""
            print(f"RESULT {row['name']}: val mIoU {row['mIoU']:.4f}{test}; train {row['train_s']:.0f} s, "
                  f"{row['gflops']:.1f} GFLOP/s; {args.out / domain / 'results.md'}", flush=True)  # fmt: skip


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    main()
