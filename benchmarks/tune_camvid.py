"""Tune acceptance (#21): `vitdense tune` on the CamVid train split, with the recipe benchmark's settings, against the
template's measured-best lr (3e-4: docs/recipes.md, 0.620 val mIoU at 600 x 8; 1e-4 and 5e-4 scored lower).

    python benchmarks/tune_camvid.py                      # the default range test (1e-7 .. 1, 100 steps)
    python benchmarks/tune_camvid.py --steps 60 --threads 2

The config is benchmarks/recipes.py's (configs/segmentation_folder.yaml, ImageNet ViT-Ti weights, crop 224, batch 8,
UPerNet channels 128, CamVid 11 classes with void 11, CPU, 32-bit), written to <work>/recipe.yaml; then
``python -m vitdense tune --config <work>/recipe.yaml`` runs as a process of its own, as a user runs it. The
suggestion, the steepest-descent lr, the curve and the ratio to 3e-4 go to <out>/tune_camvid.{json,md} with the
machine (CPU, threads, fp32 matmul GFLOP/s) and the commit; the curve is copied beside them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from machine import machine_info  # benchmarks/machine.py
from recipes import NUM_CLASSES, VOID, build_config, build_parser, git_commit, matmul_gflops

REPO = Path(__file__).resolve().parents[1]
MEASURED_BEST = 3e-4


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100, help="steps of the lr ramp (vitdense tune --steps)")
    p.add_argument("--min-lr", type=float, default=1e-7)
    p.add_argument("--max-lr", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)), help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("/tmp/vitdense_tune_camvid"), help="scratch (replaced)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    import torch

    torch.set_num_threads(args.threads)
    gflops, commit = matmul_gflops(), git_commit()

    recipe = build_parser().parse_args(["--seed", str(args.seed)])  # the recipe benchmark's defaults
    recipe.num_classes, recipe.void = NUM_CLASSES, VOID
    cfg = build_config(recipe, args.work / "runs")
    cfg["trainer"]["callbacks"] = []  # recipes.py's Timer times its own fits; the range test needs none
    config = args.work / "recipe.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    output = args.work / "tune"
    cmd = [sys.executable, "-m", "vitdense", "tune", "--config", str(config), "--steps", str(args.steps),
           "--min_lr", str(args.min_lr), "--max_lr", str(args.max_lr), "--output", str(output)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    (args.work / "tune.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"vitdense tune failed (exit code {proc.returncode}); see {args.work / 'tune.log'}")
    if not (output / "tune.yaml").exists():  # the minimum lay at the edge of the range: tune suggests nothing
        raise SystemExit(f"vitdense tune suggested no lr (minimum at the edge); see {args.work / 'tune.log'}")
    suggested = float(yaml.safe_load((output / "tune.yaml").read_text())["model"]["init_args"]["optimizer"]["lr"])
    steepest = float(re.search(r"steepest descent at lr (\S+)", proc.stdout).group(1))
    with open(output / "lr_range_test.csv") as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    best = min(rows, key=lambda r: r["smoothed_loss"])
    ratio = suggested / MEASURED_BEST
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copy(output / "lr_curve.png", args.out / "tune_camvid_lr_curve.png")
    result = {
        "suggested_lr": suggested, "measured_best_lr": MEASURED_BEST, "ratio": ratio,
        "within_3x": 1 / 3 <= ratio <= 3, "steepest_lr": steepest, "lr_at_min_smoothed_loss": best["lr"],
        "min_smoothed_loss": best["smoothed_loss"], "start_smoothed_loss": rows[0]["smoothed_loss"],
        "steps_run": len(rows), "steps": args.steps, "min_lr": args.min_lr, "max_lr": args.max_lr,
        "last_lr": rows[-1]["lr"], "seconds": seconds, "report": proc.stdout.strip().splitlines()[-5:],
        "curve": [{k: r[k] for k in ("lr", "loss", "smoothed_loss")} for r in rows],
        "settings": {"crop": recipe.crop, "batch": recipe.batch, "head_channels": recipe.head_channels,
                     "weights": Path(recipe.weights).name, "root": str(recipe.root), "seed": args.seed,
                     "optimizer": cfg["model"]["init_args"]["optimizer"]},
        "machine": machine_info(args.threads, gflops),
        "commit": commit, "command": " ".join(["python", *cmd[1:]]),
    }  # fmt: skip
    (args.out / "tune_camvid.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "tune_camvid.md").write_text(markdown(result))
    print(markdown(result), flush=True)


def raw_curve(curve: list[dict], window: int = 5) -> tuple[float, float | None]:
    """The lr where the raw loss's ``window``-step mean is lowest, and the first lr after it where that mean passes
    the first window's (the loss blowing up), for the report beside the smoothed curve's (the EMA lags)."""
    means = [sum(c["loss"] for c in curve[i : i + window]) / window for i in range(len(curve) - window + 1)]
    low = min(range(len(means)), key=means.__getitem__)
    up = next((i for i in range(low, len(means)) if means[i] > means[0]), None)
    return curve[low + window // 2]["lr"], None if up is None else curve[up + window // 2]["lr"]


def markdown(r: dict) -> str:
    m, s = r["machine"], r["settings"]
    raw_low, raw_up = raw_curve(r["curve"])
    blows = f"passes its starting value at lr {raw_up:.2g}" if raw_up else "never passes its starting value"
    verdict = "within" if r["within_3x"] else "NOT within"
    decades = math.log10(r["last_lr"] / r["min_lr"])
    return "\n".join([
        "# `vitdense tune` on CamVid train against the measured-best lr",
        "",
        f"`python benchmarks/tune_camvid.py` at {r['commit']}; {m['cpu']}, {m['threads']} threads, fp32 matmul "
        f"{m['matmul_fp32_gflops']} GFLOP/s (load average {m['load_average'][0]:.1f}: a shared machine); "
        f"{r['seconds']:.0f} s.",
        f"Config: configs/segmentation_folder.yaml with recipes.py's settings (ViT-Ti {s['weights']}, "
        f"crop {s['crop']}, batch {s['batch']}, UPerNet channels {s['head_channels']}, "
        f"optimizer {json.dumps(s['optimizer'])}).",
        "",
        "| | lr |",
        "|---|---|",
        f"| suggested (lr at the smoothed loss's minimum / 10) | {r['suggested_lr']:.3g} |",
        f"| lr at the smoothed minimum | {r['lr_at_min_smoothed_loss']:.3g} |",
        f"| steepest descent | {r['steepest_lr']:.3g} |",
        f"| template's measured best (docs/recipes.md) | {r['measured_best_lr']:.3g} |",
        "",
        f"Suggested / measured best = {r['ratio']:.2f}: {verdict} 3x. The range test ran {r['steps_run']} of "
        f"{r['steps']} steps ({decades:.1f} decades from {r['min_lr']:.0e} to {r['last_lr']:.2e}); smoothed loss "
        f"{r['start_smoothed_loss']:.3f} at the start, {r['min_smoothed_loss']:.3f} at its minimum. The raw loss "
        f"(5-step mean) is lowest at lr {raw_low:.2g} and {blows}: the smoothed minimum (an exponential average, "
        "beta 0.98, as fastai and Lightning smooth) lags the raw curve, and sits where the loss stops falling.",
        "",
        "![loss against lr](tune_camvid_lr_curve.png)",
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    main()
