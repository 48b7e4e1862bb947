#!/usr/bin/env python3
"""Peer baseline for any benchmark domain: segmentation_models_pytorch's DPT on the same pretrained ViT-Tiny weights,
a plain PyTorch loop, a fixed step budget. The loop of ../shared/peers/peer_camvid.py with its algorithm and defaults
unchanged; only the dataset facts come from the folder layout instead of CamVid's constants:

- class count and names from ``<root>/classes.txt`` (``name`` or ``<id> <name>`` lines; a line numbered with the void
  id is not a class);
- the void id from ``--void``, else ``<root>/domain.json`` (benchmarks/domains.py writes it), else CamVid's convention
  of ../shared/data/camvid (void = the number of classes, 11);
- several eval splits after one training (``--eval-split val,test``), each printed as its own RESULT line.

Scores at full resolution over one confusion matrix per split. ``test_mIoU`` (the name the CamVid peer used) averages
the classes present in the split's ground truth or predictions, as vitdense's mIoU does; ``mIoU_all`` averages all
classes, as peer_camvid.py did (the two are equal when every class occurs, as on CamVid val).

Usage: python benchmarks/peer_loop.py --root /work/bench_data/ccp --eval-split val,test --arch dpt --small-decoder
Needs: torch, timm, segmentation-models-pytorch, albumentations, safetensors (all in vitdense's install).
"""

import argparse
import glob
import json
import os
import re
import time

import albumentations as A
import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")

p = argparse.ArgumentParser()
p.add_argument("--root", default=os.path.join(SHARED, "data", "camvid"))
p.add_argument("--eval-split", default="val", help="split(s) scored after training, comma-separated: val,test")
p.add_argument("--arch", default="dpt")
p.add_argument("--encoder", default="tu-vit_tiny_patch16_224")
p.add_argument("--weights", default=os.path.join(SHARED, "weights", "vit_tiny_patch16_224.safetensors"))
p.add_argument("--scratch", action="store_true")
p.add_argument("--steps", type=int, default=600)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--crop", type=int, default=224)
p.add_argument("--lr", type=float, default=3e-4)
p.add_argument("--small-decoder", action="store_true", help="DPT decoder channels (48,96,192,384)/64, sized for CPU")
p.add_argument("--void", type=int, help="mask value of void pixels (default: domain.json, else CamVid's 11)")
p.add_argument("--seed", type=int, default=0, help="torch and numpy seed")
a = p.parse_args()


def read_classes(root):
    """Class names in id order from classes.txt, and the id of a line naming the void class (or None)."""
    with open(os.path.join(root, "classes.txt")) as f:
        lines = [s.strip() for s in f.read().splitlines()]
    lines = [s for s in lines if s and not s.startswith("#")]
    if not all(re.match(r"^\d+[\s:,]", s) for s in lines):
        return lines, None
    by_id = {int(m.group(1)): m.group(2) for m in (re.match(r"^(\d+)[\s:,]+(\S+)", s) for s in lines)}
    k = 0
    while k in by_id:
        k += 1
    extra = sorted(set(by_id) - set(range(k)))
    return [by_id[i] for i in range(k)], (extra[0] if extra else None)


names, listed_void = read_classes(a.root)
meta_path = os.path.join(a.root, "domain.json")
meta = {}
if os.path.isfile(meta_path):
    with open(meta_path) as f:
        meta = json.load(f)
NC = len(names)
VOID = a.void if a.void is not None else meta.get("ignore_index", listed_void if listed_void is not None else NC)
print(f"{NC} classes, void {VOID}: {', '.join(names)}")
torch.manual_seed(a.seed)
np.random.seed(a.seed)
mean = std = (0.5, 0.5, 0.5)


def load(split):
    ims = sorted(glob.glob(f"{a.root}/{split}/images/*"))

    def mask(f):
        return os.path.join(a.root, split, "masks", os.path.splitext(os.path.basename(f))[0] + ".png")

    return [(np.array(Image.open(f).convert("RGB")), np.array(Image.open(mask(f)))) for f in ims]


eval_splits = [s for s in a.eval_split.split(",") if s]
train, tests = load("train"), {s: load(s) for s in eval_splits}
for s, data in tests.items():
    if not data:
        raise SystemExit(f"no images in {a.root}/{s}/images")
aug = A.Compose([A.RandomScale((-0.5, 1.0), p=1), A.PadIfNeeded(a.crop, a.crop, fill_mask=VOID),
                 A.RandomCrop(a.crop, a.crop), A.HorizontalFlip(), A.Normalize(mean, std)])  # fmt: skip
norm = A.Normalize(mean, std)

kw = dict(encoder_name=a.encoder, encoder_weights=None, classes=NC)
if a.arch == "dpt":
    kw["dynamic_img_size"] = True
    if a.small_decoder:
        kw.update(decoder_intermediate_channels=(48, 96, 192, 384), decoder_fusion_channels=64)
model = smp.create_model(a.arch, **kw)
if not a.scratch:
    sd = load_file(a.weights)
    enc = model.encoder.model
    missing, unexpected = enc.load_state_dict(sd, strict=False)
    print(f"loaded pretrained: {len(sd) - len(unexpected)} tensors, missing {len(missing)}")
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / 50) * (1 - s / a.steps) ** 0.9)
model.train()
t0 = time.time()
for step in range(a.steps):
    idx = np.random.randint(len(train), size=a.batch)
    xs, ys = zip(*[(r["image"], r["mask"]) for r in (aug(image=train[i][0], mask=train[i][1]) for i in idx)])
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float()
    y = torch.from_numpy(np.stack(ys)).long()
    loss = F.cross_entropy(model(x), y, ignore_index=VOID)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if step % 50 == 0:
        print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
train_s = time.time() - t0
model.eval()
for split, test in tests.items():
    cm = torch.zeros(NC, NC, dtype=torch.long)
    with torch.no_grad():
        for im, m in test:
            x = torch.from_numpy(norm(image=im)["image"]).permute(2, 0, 1)[None].float()
            H, W = x.shape[-2:]
            ph, pw = (-H) % 32, (-W) % 32
            logits = model(F.pad(x, (0, pw, 0, ph)))[..., :H, :W]
            pred = logits.argmax(1)[0].flatten()
            gt = torch.from_numpy(m).long().flatten()
            k = gt != VOID
            cm += torch.bincount(gt[k] * NC + pred[k], minlength=NC * NC).view(NC, NC)
    union = cm.sum(0) + cm.sum(1) - cm.diag()
    iou = cm.diag() / union.clamp(min=1)
    present = union > 0
    print(f"per-class IoU {split}", [round(v, 3) if ok else None for v, ok in zip(iou.tolist(), present.tolist())])
    print(f"RESULT eval_split={split} arch={a.arch} small_decoder={a.small_decoder} encoder={a.encoder} "
          f"pretrained={not a.scratch} steps={a.steps} batch={a.batch} crop={a.crop} train_s={train_s:.0f} "
          f"test_mIoU={iou[present].mean().item():.4f} mIoU_all={iou.mean().item():.4f} "
          f"pixel_acc={(cm.diag().sum() / cm.sum()).item():.4f}", flush=True)  # fmt: skip
