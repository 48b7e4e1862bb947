"""Recipe benchmark: fine-tune UPerNet + ViT-Ti through vitdense's own CLI, one results row per run, on CamVid
or on the domains that benchmarks/domains.py builds.

    python benchmarks/recipes.py                                   # the default recipe, row "default"
    python benchmarks/recipes.py --lr 3e-4 --layer-decay off       # row "lr=3e-4,layer_decay=off"
    python benchmarks/recipes.py --loss-json '{"dice_weight": 1.0}' --ema 0.999
    python benchmarks/recipes.py --set model.init_args.freeze_backbone=true --name "linear probe"
    python benchmarks/recipes.py --peer                            # this recipe, then the smp DPT peer
    python benchmarks/recipes.py --peer-only --steps 600 --batch 8
    python benchmarks/recipes.py --domain ccp --peer                # the template and the peer on one domain
    python benchmarks/recipes.py --domain all --peer                # ... on every domain under --data-root
    python benchmarks/recipes.py --domain ph2 --also-infer '{"mode": "whole"}'   # + a row scored whole-image

The recipe is the shipped template, configs/segmentation_folder.yaml (model and data settings), with the
benchmark's budget (--steps, --batch, --crop), a CPU-sized head (--head-channels) and the ViT-Ti ImageNet weights;
each recipe flag, when given, overrides the template's value and names the row.
Each run writes its config to <out>/runs/<name>/recipe.yaml and calls `vitdense.cli.entry.main(["fit", ...])` on it:
training for --steps optimizer steps, then one validation over the whole val split, scored at full resolution the
way the template scores (its `inference`, recorded in the row: by windows of the crop since the template's change to
`mode: slide`; rows before it were scored whole-image and record no `inference`).
The row (val mIoU, pixel accuracy, per-class IoU, train time, the machine's fp32 matmul rate, git commit) replaces
the row of the same name in <out>/results.json, and <out>/results.md is rewritten from all rows.

With --domain, the data is <data-root>/<domain> (the layout and domain.json of benchmarks/domains.py: classes and
void id come from there), the peer is benchmarks/peer_loop.py, and rows go to <out>/<domain>/results.{json,md}, apart
from the CamVid rows above. Both the template and the peer are then also scored on the domain's test split after
training, with the same weights as val; the test split is reported, never used to choose anything: compare recipes on
val. Without --domain, everything is as before (CamVid from --root, the shared peer, <out>/results.json).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.callbacks import Timer
from machine import matmul_gflops  # benchmarks/machine.py

from vitdense.cli.entry import main as vitdense_main
from vitdense.data import SegmentationFolderDataModule
from vitdense.data.recipe_rules import single_object_rule
from vitdense.models.config import merge_config
from vitdense.tasks.inference import check_inference_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PEER_SCRIPT = SHARED / "peers" / "peer_camvid.py"
DOMAIN_PEER = REPO / "benchmarks" / "peer_loop.py"  # the same loop, classes and void read from the domain
DATA_ROOT = Path("/work/bench_data")  # benchmarks/domains.py's default output
TEMPLATE = REPO / "configs" / "segmentation_folder.yaml"
PEER_ROW = "peer: smp DPT (plain loop)"


def peer_row_name(seed: int) -> str:
    """The peer's row: ``PEER_ROW`` at seed 0 (the rows before seeds were named), ``PEER_ROW, seed=N`` else, so that
    a second seed of the peer is a row of its own instead of replacing the first."""
    return PEER_ROW if seed == 0 else f"{PEER_ROW}, seed={seed}"


NUM_CLASSES, VOID = 11, 11
# Flags that shape the recipe; a row's default name lists those that differ from their defaults.
KNOBS = ("steps", "batch", "crop", "head_channels", "seed", "weights")
# Recipe flags: None = the template's value; given = an override that names the row.
RECIPE = ("scale_range", "lr", "weight_decay", "layer_decay", "head_lr_mult", "warmup", "drop_path", "aux_weight",
          "ema")  # fmt: skip
OFF = "off"
SHORT_NAMES = {"Building": "bldg", "Pavement": "pave", "SignSymbol": "sign", "Pedestrian": "ped", "Bicyclist": "bike"}


def float_or_off(text: str) -> float | str:
    """A float, or "off"."""
    return OFF if text.lower() == OFF else float(text)


def json_dict(text: str) -> dict:
    """A JSON object."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def key_value(text: str) -> tuple[str, str]:
    """KEY=VALUE split at the first "="."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the usage examples as written and shows each flag's default."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add = p.add_argument
    add("--root", type=Path, default=SHARED / "data" / "camvid", help="CamVid root: {train,val}/{images,masks}")
    add("--weights", default=str(SHARED / "weights" / "vit_tiny_patch16_224.safetensors"), help="ViT-Ti weights")
    add("--steps", type=int, default=600, help="optimizer steps (trainer.max_steps)")
    add("--batch", type=int, default=8, help="training batch size (also the val batch size)")
    add("--crop", type=int, default=224, help="training crop side (the backbone is built for it)")
    add("--head-channels", type=int, default=128, help="UPerNet channels, CPU-sized (the auxiliary head gets half)")
    recipe = p.add_argument_group("recipe overrides (default: the template's value)").add_argument
    recipe("--scale-range", type=float, nargs=2, metavar=("LO", "HI"), help="random rescale range")
    recipe("--lr", type=float, help="AdamW base learning rate")
    recipe("--weight-decay", type=float, help="AdamW weight decay")
    recipe("--layer-decay", type=float_or_off, help='layer-wise lr decay, or "off"')
    recipe("--head-lr-mult", type=float, help="lr multiplier of neck and heads")
    recipe("--warmup", type=int, help="linear warmup steps before the poly decay")
    recipe("--drop-path", type=float, help="backbone stochastic depth rate")
    recipe("--aux-weight", type=float, help="auxiliary FCN head loss weight (0 = no auxiliary head)")
    recipe("--ema", type=float_or_off, help='EMA decay of the weights (e.g. 0.999), or "off"')
    recipe("--loss-json", dest="loss", type=json_dict, metavar="JSON", help="model.init_args.loss keys, as JSON")
    add("--set", type=key_value, action="append", metavar="KEY=VALUE", help="CLI override --KEY VALUE, repeatable")
    add("--seed", type=int, default=0, help="seed_everything")
    add("--threads", type=int, default=2, help="torch threads (also OMP_NUM_THREADS of the peer)")
    add("--name", help="row name; unset: the flags that differ from their defaults, or 'default'")
    add("--out", type=Path, default=REPO / "benchmarks" / "results" / "recipes", help="results folder")
    add("--also-infer", type=json_dict, action="append", metavar="JSON",
        help="after the run, score val (and test) again with these model.init_args.inference keys, e.g. "
             '\'{"mode": "slide"}\'; row "NAME, inference=..." (same weights, no training); repeatable')  # fmt: skip
    add("--keep-weights", action="store_true", help="save the final weights to <out>/runs/<name>/final.pt")
    add("--peer", action="store_true", help="after this recipe, run the smp DPT peer too")
    add("--peer-only", action="store_true", help="run only the smp DPT peer")
    add("--domain", help="a domain under --data-root (benchmarks/domains.py), or 'all'; unset: CamVid from --root")
    add("--data-root", type=Path, default=DATA_ROOT, help="where benchmarks/domains.py wrote the domains")
    return p


def short(value: Any) -> str:
    """Compact text of a flag value for row names: 3e-4, off, 0.5..2, a weights file's stem."""
    if value is None:
        return "off"
    if isinstance(value, list):
        return "..".join(short(v) for v in value)
    if isinstance(value, str):
        return value if value == OFF else Path(value).stem
    if isinstance(value, float):
        plain, sci = f"{value:g}", f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")
        return sci if float(sci) == value and len(sci) < len(plain) else plain
    return str(value)


def default_name(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    defaults = parser.parse_args([])
    parts = [f"{k}={short(getattr(args, k))}" for k in KNOBS if getattr(args, k) != getattr(defaults, k)]
    parts += [f"{k}={short(getattr(args, k))}" for k in RECIPE if getattr(args, k) is not None]
    parts += [f"{k}={short(v)}" for k, v in (args.loss or {}).items()]
    parts += [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in args.set or []]
    return ",".join(parts) or "default"


def _given(value: Any) -> Any:
    return None if value == OFF else value


def build_config(args: argparse.Namespace, run_dir: Path) -> dict:
    """The LightningCLI config of one recipe run: the template, the benchmark's budget, the given overrides."""
    template = yaml.safe_load(TEMPLATE.read_text())
    model = template["model"]["init_args"]
    model["backbone"].update(pretrained=args.weights)  # img_size: linked from data.crop_size
    model["head"] = {**model.get("head", {}), "channels": args.head_channels, "aux_channels": args.head_channels // 2}
    optimizer, scheduler = model.setdefault("optimizer", {}), model.setdefault("scheduler", {})
    overrides = {
        ("backbone", "drop_path_rate"): args.drop_path,
        ("head", "aux_weight"): args.aux_weight,
        ("optimizer", "lr"): args.lr,
        ("optimizer", "weight_decay"): args.weight_decay,
        ("optimizer", "layer_decay"): args.layer_decay,
        ("optimizer", "head_lr_mult"): args.head_lr_mult,
        ("scheduler", "warmup_steps"): args.warmup,
    }
    targets = {"backbone": model["backbone"], "head": model["head"], "optimizer": optimizer, "scheduler": scheduler}
    for (section, key), value in overrides.items():
        if value is not None:
            targets[section][key] = _given(value)
    if args.ema is not None:
        model["ema_decay"] = _given(args.ema)
    if args.loss:
        model["loss"] = {**model.get("loss", {}), **args.loss}
    data = {**template["data"]["init_args"], "root": str(args.root), "num_classes": args.num_classes,
            "ignore_index": args.void, "crop_size": args.crop, "batch_size": args.batch, "num_workers": 0}  # fmt: skip
    if args.scale_range is not None:
        data["scale_range"] = args.scale_range
    trainer = {
        "accelerator": "cpu",
        "devices": 1,
        "precision": 32,
        "max_steps": args.steps,
        # one validation, after the last step, over the whole val split
        "check_val_every_n_epoch": None,
        "val_check_interval": args.steps,
        "num_sanity_val_steps": 0,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "default_root_dir": str(run_dir),
        # times training and validation apart; an explicit interval, as jsonargparse cannot represent its enum default
        "callbacks": [{"class_path": "lightning.pytorch.callbacks.Timer", "init_args": {"interval": "step"}}],
    }
    return {
        "seed_everything": args.seed,
        "model": {"class_path": template["model"]["class_path"], "init_args": model},
        "data": {"class_path": template["data"]["class_path"], "init_args": data},
        "trainer": trainer,
    }


def git_commit() -> str:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results")  # not our rows
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


def run_vitdense(args: argparse.Namespace, name: str, class_names: list[str]) -> dict:
    """Train and validate one recipe through ``vitdense.cli.entry.main`` (then test, with --domain); return its row."""
    run_dir = args.out / "runs" / re.sub(r"[^\w.=,-]+", "_", name)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The CLI saves the resolved config here and refuses to overwrite the one of an earlier run of this row.
    (run_dir / "config.yaml").unlink(missing_ok=True)
    config = run_dir / "recipe.yaml"
    config.write_text(yaml.safe_dump(build_config(args, run_dir), sort_keys=False))
    cli_args = ["fit", "--config", str(config)] + [a for key, value in args.set or [] for a in (f"--{key}", value)]
    commit, gflops = git_commit(), matmul_gflops()  # the code this run starts from
    # sys.argv holds this script's flags, not the CLI's: LightningCLI's warning about both does not apply
    warnings.filterwarnings("ignore", "LightningCLI's args parameter")
    start = time.perf_counter()
    cli = vitdense_main(cli_args)
    total_s = time.perf_counter() - start
    trainer = cli.trainer
    val_batches = trainer.fit_loop.epoch_loop.val_loop.batch_progress.total.completed
    if val_batches != sum(trainer.num_val_batches):
        raise SystemExit(f"expected one full validation ({sum(trainer.num_val_batches)} batches), ran {val_batches}")
    timer = next(cb for cb in trainer.callbacks if isinstance(cb, Timer))
    train_s, val_s = timer.time_elapsed("train") - timer.time_elapsed("validate"), timer.time_elapsed("validate")
    if args.keep_weights:
        torch.save(cli.model.state_dict(), run_dir / "final.pt")
    row = {
        "name": name,
        **split_scores(trainer.callback_metrics, "val", class_names),
        **test_scores(args, cli, class_names),
        "train_s": train_s,
        "val_s": val_s,
        "total_s": total_s,
        "gflops": gflops,
        "threads": torch.get_num_threads(),
        "steps": trainer.global_step,
        "batch": args.batch,
        "crop": args.crop,
        "commit": commit,
        "command": shlex.join(["python", "-m", "vitdense", *cli_args]),
        "inference": dict(cli.model.inference_cfg),  # how val and test were scored (the template's: by windows)
    }
    trained_with = dict(cli.model.inference_cfg)
    rows = [row] + [
        rescored_row(args, cli, row, trained_with, inference, class_names) for inference in args.also_infer or []
    ]
    return [{"domain": args.domain, **r} if args.domain else r for r in rows]


def rescored_row(
    args: argparse.Namespace, cli: Any, base: dict, trained_with: dict, inference: dict, class_names: list[str]
) -> dict:
    """``base`` (the row of ``cli.model``'s weights) scored again on val (and test, see test_scores) with the
    inference ``trained_with`` updated by ``inference``: the row ``"<base>, inference <key=value,...>"``.
    ``keep_largest: auto`` is what the rule chooses from the training masks, as fitting with it would."""
    resolved = dict(inference)
    if inference.get("keep_largest") == "auto":
        present, solid = cli.datamodule.class_object_counts()
        resolved["keep_largest"] = single_object_rule(present, solid, class_names).value
    cli.model.inference_cfg = merge_config(resolved, trained_with, "inference")
    check_inference_config(cli.model.inference_cfg, cli.model.input_size())
    start = time.perf_counter()
    val = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    rescored = {**split_scores(val, "val", class_names), **test_scores(args, cli, class_names)}
    label = ",".join(f"{k}={short(v)}" for k, v in inference.items())
    return {**base, **rescored, "name": f"{base['name']}, inference {label}", "same_run_as": base["name"],
            "val_s": time.perf_counter() - start, "inference": dict(cli.model.inference_cfg)}  # fmt: skip


def split_scores(metrics: dict, split: str, class_names: list[str]) -> dict:
    """mIoU, pixel accuracy and per-class IoU of ``split`` (val or test) from its logged metrics, under the row's keys
    (``mIoU``, ``pixel_acc``, ``iou`` for val; ``test_`` before each for test)."""
    metrics = {k: float(v) for k, v in metrics.items()}
    key = "" if split == "val" else f"{split}_"
    return {
        f"{key}mIoU": metrics[f"{split}/mIoU"],
        f"{key}pixel_acc": metrics[f"{split}/pixel_acc"],
        f"{key}iou": {c: metrics.get(f"{split}/IoU/{c}") for c in class_names},
    }


def test_scores(args: argparse.Namespace, cli: Any, class_names: list[str]) -> dict:
    """With --domain and a test split: the current weights scored on it (reported only, never used to choose)."""
    if not (args.domain and has_split(args.root, "test")):
        return {}
    return split_scores(cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0], "test", class_names)


def peer_script(args: argparse.Namespace) -> Path:
    """The plain-loop peer's script: the shared peer_camvid.py for CamVid at seed 0, else benchmarks/peer_loop.py."""
    return PEER_SCRIPT if not args.domain and args.seed == 0 else DOMAIN_PEER


def run_peer(args: argparse.Namespace, class_names: list[str]) -> dict:
    """Run the smp DPT peer script (same python, same budget) and return its results row.

    CamVid: the shared peer_camvid.py on val. It seeds with 0 and takes no seed, so another seed runs the same loop
    through benchmarks/peer_loop.py (its algorithm and defaults unchanged, ``--seed``), scored on val the same way.
    A domain: benchmarks/peer_loop.py, one training scored on val and, where the domain has one, test.
    """
    script = peer_script(args)
    cmd = [sys.executable, str(script), "--arch", "dpt", "--small-decoder", "--steps", str(args.steps),
           "--batch", str(args.batch), "--crop", str(args.crop), "--root", str(args.root)]  # fmt: skip
    if args.domain:
        splits = "val,test" if has_split(args.root, "test") else "val"
        cmd += ["--void", str(args.void), "--eval-split", splits, "--seed", str(args.seed)]
    elif script == DOMAIN_PEER:
        cmd += ["--eval-split", "val", "--seed", str(args.seed)]
    commit, gflops = git_commit(), matmul_gflops()
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:  # type: ignore[union-attr]
        print(line, end="", flush=True)
        lines.append(line.strip())
    if proc.wait() != 0 or not any(line.startswith("RESULT ") for line in lines):
        raise SystemExit(f"peer failed (exit code {proc.returncode}, no RESULT line): {shlex.join(cmd)}")
    if script == DOMAIN_PEER:
        return peer_domain_row(args, lines, class_names, commit, gflops, time.perf_counter() - start, cmd)
    result = dict(re.findall(r"(\w+)=(\S+)", next(line for line in reversed(lines) if line.startswith("RESULT "))))
    ious = ast.literal_eval(next(line for line in reversed(lines) if line.startswith("per-class IoU "))[14:])
    return {
        "name": peer_row_name(args.seed),
        "mIoU": float(result["test_mIoU"]),
        "pixel_acc": float(result["pixel_acc"]),
        "iou": dict(zip(class_names, ious, strict=True)),
        "train_s": float(result["train_s"]),
        "total_s": time.perf_counter() - start,
        "gflops": gflops,
        "threads": args.threads,
        "steps": args.steps,
        "batch": args.batch,
        "crop": args.crop,
        "commit": commit,
        "command": shlex.join(["python", *cmd[1:]]),
    }


def peer_domain_row(
    args: argparse.Namespace,
    lines: list[str],
    class_names: list[str],
    commit: str,
    gflops: float,
    total_s: float,
    cmd: list[str],
) -> dict:
    """The peer's row on a domain from peer_loop.py's output: one RESULT and per-class line per eval split."""
    results = {}
    for line in lines:
        if line.startswith("RESULT "):
            result = dict(re.findall(r"(\w+)=(\S+)", line))
            results[result["eval_split"]] = result
        elif line.startswith("per-class IoU "):
            split, _, values = line[len("per-class IoU ") :].partition(" ")
            results.setdefault("iou", {})[split] = dict(zip(class_names, ast.literal_eval(values), strict=True))
    val, test = results["val"], results.get("test")
    row = {
        **({"domain": args.domain} if args.domain else {}),
        "name": peer_row_name(args.seed),
        "mIoU": float(val["test_mIoU"]),  # peer_loop's name for the scored split's mIoU; this one is val
        "pixel_acc": float(val["pixel_acc"]),
        "iou": results["iou"]["val"],
    }
    if test:
        row.update(test_mIoU=float(test["test_mIoU"]), test_pixel_acc=float(test["pixel_acc"]))
        row["test_iou"] = results["iou"]["test"]
    run = {"train_s": float(val["train_s"]), "total_s": total_s, "gflops": gflops, "threads": args.threads}
    budget = {"steps": args.steps, "batch": args.batch, "crop": args.crop, "commit": commit}
    return {**row, **run, **budget, "command": shlex.join(["python", *cmd[1:]])}


def markdown(rows: dict[str, dict], class_names: list[str]) -> str:
    """The results table: one row per run, in stored order."""

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    classes = [SHORT_NAMES.get(c, c.lower()) for c in class_names]
    header = ["name", "mIoU", "pixel acc", *classes, "train s", "GFLOP/s", "steps x batch", "crop", "commit"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows.values():
        scores = [num(r["mIoU"]), num(r["pixel_acc"]), *(num(r["iou"].get(c)) for c in class_names)]
        run = [f"{r['train_s']:.0f}", f"{r['gflops']:.1f}", f"{r['steps']}x{r['batch']}", str(r["crop"]), r["commit"]]
        lines.append("| " + " | ".join([r["name"], *scores, *run]) + " |")
    note = ("CamVid val (101 frames, full resolution), UPerNet + vit_tiny_patch16_224 unless named otherwise. "
            "IoU per class (- = class absent from prediction and ground truth); train s = training wall time "
            "without validation; GFLOP/s = fp32 1024x1024 matmul rate measured just before the run.")  # fmt: skip
    return f"# CamVid recipes\n\n{note}\n\n" + "\n".join(lines) + "\n"


def domain_markdown(rows: dict[str, dict], class_names: list[str], meta: dict) -> str:
    """One domain's table: val and test scores per row (per-class val IoU when there are at most 12 classes)."""

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    per_class = class_names if len(class_names) <= 12 else []
    header = ["name", "val mIoU", "test mIoU", "val pixel acc", "test pixel acc", *(f"val {c}" for c in per_class)]
    header += ["train s", "GFLOP/s", "steps x batch", "crop", "commit"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows.values():
        scores = [num(r["mIoU"]), num(r.get("test_mIoU")), num(r["pixel_acc"]), num(r.get("test_pixel_acc"))]
        scores += [num(r["iou"].get(c)) for c in per_class]
        run = [f"{r['train_s']:.0f}", f"{r['gflops']:.1f}", f"{r['steps']}x{r['batch']}", str(r["crop"]), r["commit"]]
        lines.append("| " + " | ".join([r["name"], *scores, *run]) + " |")
    sizes = ", ".join(f"{k} {v['images']}" for k, v in meta["splits"].items())
    note = (f"{meta['domain']}; {meta['num_classes']} classes; {sizes} images ({meta['split_source']}). "
            "UPerNet + vit_tiny_patch16_224 unless named otherwise; val and test scored at full resolution with the "
            "weights after the last step. Recipes are compared on val; test is reported, never used to choose. "
            "mIoU averages the classes present in a split's ground truth or predictions, for both sides.")  # fmt: skip
    return f"# Recipes on {meta['name']}\n\n{note}\n\n" + "\n".join(lines) + "\n"


def save_row(out: Path, row: dict, class_names: list[str], meta: dict | None = None) -> dict[str, dict]:
    """Replace (or append) ``row`` in results.json, rewrite results.md; return all rows."""
    path = out / "results.json"
    rows = json.loads(path.read_text()) if path.exists() else {}
    rows[row["name"]] = row
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")
    table = domain_markdown(rows, class_names, meta) if meta else markdown(rows, class_names)
    (out / "results.md").write_text(table)
    return rows


def has_split(root: Path, split: str) -> bool:
    """Whether ``root/split`` holds at least one image."""
    images = root / split / "images"
    return images.is_dir() and any(images.iterdir())


def domain_names(data_root: Path, domain: str) -> list[str]:
    """The domains ``--domain`` names: one, or every folder of ``data_root`` holding a domain.json."""
    if domain == "all":
        names = (
            sorted(d.name for d in data_root.iterdir() if (d / "domain.json").is_file()) if data_root.is_dir() else []
        )
        if not names:
            raise SystemExit(f"no domains under '{data_root}': run python benchmarks/domains.py all first.")
        return names
    if not (data_root / domain / "domain.json").is_file():
        raise SystemExit(f"domain '{domain}' not found under '{data_root}': run python benchmarks/domains.py {domain}.")
    return [domain]


def run_rows(args: argparse.Namespace, name: str, meta: dict | None) -> dict[str, dict]:
    """The recipe run and/or the peer run of ``args``; return the rows of its results file."""
    class_names = SegmentationFolderDataModule(str(args.root), args.num_classes, args.void).class_names
    rows: dict[str, dict] = {}
    if not args.peer_only:
        for row in run_vitdense(args, name, class_names):
            rows = save_row(args.out, row, class_names, meta)
    if args.peer or args.peer_only:
        rows = save_row(args.out, run_peer(args, class_names), class_names, meta)
    table = domain_markdown(rows, class_names, meta) if meta else markdown(rows, class_names)
    print("\n" + table)
    return rows


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name = args.name or default_name(args, parser)
    if not args.peer_only and not Path(args.weights).is_file():
        raise SystemExit(f"weights '{args.weights}' not found: pass --weights.")
    script = peer_script(args)
    if (args.peer or args.peer_only) and not script.is_file():
        raise SystemExit(f"peer script '{script}' not found.")
    if not args.domain:
        if not all((args.root / split).is_dir() for split in ("train", "val")):
            raise SystemExit(
                f"CamVid not found at '{args.root}' (expected {{train,val}}/{{images,masks}}): pass --root."
            )
        args.num_classes, args.void = NUM_CLASSES, VOID
        report(run_rows(args, name, None), name, args.out, args.seed)
        return
    out = args.out
    for domain in domain_names(args.data_root, args.domain):
        meta = json.loads((args.data_root / domain / "domain.json").read_text())
        run_args = argparse.Namespace(**vars(args))
        run_args.domain, run_args.root, run_args.out = domain, args.data_root / domain, out / domain
        run_args.num_classes, run_args.void = meta["num_classes"], meta["ignore_index"]
        print(f"\n=== {domain}: {meta['domain']} ({meta['num_classes']} classes, root {run_args.root})", flush=True)
        report(run_rows(run_args, name, meta), name, run_args.out, args.seed)


def report(rows: dict[str, dict], name: str, out: Path, seed: int) -> None:
    """The recipe's difference to the peer (val, and test where scored), and where the table is."""
    peer_name = peer_row_name(seed)
    if peer_name in rows and name in rows:
        ours, peer = rows[name], rows[peer_name]
        budget = "" if all(ours[k] == peer[k] for k in ("steps", "batch", "crop")) else ", different budgets"
        line = f"vitdense - peer = {ours['mIoU'] - peer['mIoU']:+.3f} mIoU"
        if ours.get("test_mIoU") is not None and peer.get("test_mIoU") is not None:
            line = f"vitdense - peer = val {ours['mIoU'] - peer['mIoU']:+.3f}, test "
            line += f"{ours['test_mIoU'] - peer['test_mIoU']:+.3f} mIoU"
        print(f"{line} ({name!r} vs the peer{budget})")
    print(f"results: {out / 'results.md'}")


if __name__ == "__main__":
    main()
