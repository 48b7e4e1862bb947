"""Sweep acceptance (#21) on CamVid: `vitdense sweep` of at most 12 short trials over lr, layer decay, head multiplier
and drop path, then the full recipe budget (600 x 8) at the best trial's values, against the template's 0.620 val mIoU.

    python benchmarks/sweep_camvid.py                              # 12 trials x 200 steps, then 600 steps at the best
    python benchmarks/sweep_camvid.py --trials 12 --trial-steps 200 --threads 2
    python benchmarks/sweep_camvid.py --full-only                  # the full run again from an existing sweep folder

1. The config is benchmarks/recipes.py's (configs/segmentation_folder.yaml, ImageNet ViT-Ti weights, crop 224, batch 8,
   UPerNet channels 128, CamVid 11 classes with void 11, CPU, 32-bit) with a trial's budget: ``--trial-steps`` steps,
   a validation every ``--val-every`` steps over the whole val split (the pruner's reports), warmup scaled with the
   budget (the template's 100 of 600 steps), checkpoints on (a trial's score is its best validation) and no image
   panels.
2. ``python -m vitdense sweep`` runs it as a user does (a process of its own): TPE sampler, median pruning after
   ``--startup-trials`` finished trials, trial 0 the template's own values (the sweep's baseline trial).
3. The best trial's values are run at the full budget through ``benchmarks/recipes.py`` (a row of
   benchmarks/results/recipes/results.json, next to the template's "default" row at 0.620), scored on CamVid val.

Writes <out>/sweep_camvid.{json,md}: every trial (values, short-trial score, state, seconds), the best, the full run,
the machine (CPU, threads, fp32 matmul GFLOP/s) and the commit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from machine import machine_info  # benchmarks/machine.py
from recipes import NUM_CLASSES, VOID, build_config, build_parser, git_commit, matmul_gflops, short

REPO = Path(__file__).resolve().parents[1]
TEMPLATE_VAL = 0.620  # the template's val mIoU at 600 x 8 (docs/recipes.md; results.json row "default": 0.6199)
FULL_STEPS, TEMPLATE_WARMUP = 600, 100
LR, LD, HEAD, DP = (f"model.init_args.{k}" for k in (
    "optimizer.lr", "optimizer.layer_decay", "optimizer.head_lr_mult", "backbone.drop_path_rate"))  # fmt: skip
SPACE = {
    LR: {"type": "float", "low": 1.0e-4, "high": 1.0e-3, "log": True},
    LD: {"type": "float", "low": 0.75, "high": 0.95},
    HEAD: {"type": "float", "low": 3.0, "high": 30.0, "log": True},
    DP: {"type": "float", "low": 0.0, "high": 0.2},
}
# recipes.py flag of each space key, for the full run
RECIPE_FLAGS = {LR: "--lr", LD: "--layer-decay", HEAD: "--head-lr-mult", DP: "--drop-path"}


def trial_config(args: argparse.Namespace, work: Path) -> dict:
    """recipes.py's config with a trial's budget."""
    recipe = build_parser().parse_args(["--seed", str(args.seed), "--steps", str(args.trial_steps)])
    recipe.num_classes, recipe.void = NUM_CLASSES, VOID
    cfg = build_config(recipe, work / "runs")
    model = cfg["model"]["init_args"]
    model["log_images"] = 0
    model["scheduler"]["warmup_steps"] = round(TEMPLATE_WARMUP * args.trial_steps / FULL_STEPS)
    cfg["trainer"].update(val_check_interval=args.val_every, enable_checkpointing=True, callbacks=[])
    return cfg


def study_rows(folder: Path) -> list[dict]:
    """Every trial of the finished study: number, state, score, values, seconds, validations reported."""
    import optuna

    study = optuna.load_study(study_name="sweep_camvid", storage=f"sqlite:///{folder / 'study.db'}")
    rows = []
    for t in study.trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                     "baseline": bool(t.user_attrs.get("baseline")), "seconds": seconds,
                     "reports": dict(sorted(t.intermediate_values.items()))})  # fmt: skip
    return rows


def full_run(best: dict, args: argparse.Namespace) -> dict:
    """The recipe benchmark at the full budget with the best trial's values; its results row."""
    name = "sweep best (" + ",".join(f"{k.rsplit('.', 1)[-1]}={short(float(v))}" for k, v in best.items()) + ")"
    cmd = [sys.executable, str(REPO / "benchmarks" / "recipes.py"), "--threads", str(args.threads), "--seed",
           str(args.seed), "--steps", str(args.full_steps), "--name", name, "--out", str(args.recipes_out)]  # fmt: skip
    for key, value in best.items():
        cmd += [RECIPE_FLAGS[key], repr(float(value))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    with open(args.work / "full.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"the full run failed (exit code {proc.returncode}); see {args.work / 'full.log'}")
    row = json.loads((args.recipes_out / "results.json").read_text())[name]
    return {"name": name, "command": " ".join(["python", *cmd[1:]]), **row}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--trial-steps", type=int, default=200, help="optimizer steps of one trial")
    p.add_argument("--val-every", type=int, default=100, help="steps between a trial's validations")
    p.add_argument("--full-steps", type=int, default=FULL_STEPS, help="steps of the full run at the best values")
    p.add_argument("--startup-trials", type=int, default=3, help="vitdense sweep --startup_trials")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)), help="torch threads")
    p.add_argument("--seed", type=int, default=0, help="seed_everything of every trial and of the full run")
    p.add_argument("--full-only", action="store_true", help="skip the sweep: full run from the sweep folder's study")
    p.add_argument("--work", type=Path, default=Path("/tmp/vitdense_sweep_camvid"), help="scratch (kept: resumes)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--recipes-out", type=Path, default=REPO / "benchmarks" / "results" / "recipes")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(args.threads)
    gflops, commit = matmul_gflops(), git_commit()
    folder = args.work / "sweep"
    config, space = args.work / "sweep_camvid.yaml", args.work / "space.yaml"
    cmd = [sys.executable, "-m", "vitdense", "sweep", "--config", str(config), "--space", str(space), "--trials",
           str(args.trials), "--output", str(folder), "--startup_trials", str(args.startup_trials)]  # fmt: skip
    sweep_s = None
    if not args.full_only:
        config.write_text(yaml.safe_dump(trial_config(args, args.work), sort_keys=False))
        space.write_text(yaml.safe_dump(SPACE, sort_keys=False))
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
        start = time.perf_counter()
        with open(args.work / "sweep.log", "a") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        sweep_s = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"vitdense sweep failed (exit code {proc.returncode}); see {args.work / 'sweep.log'}")
    rows = study_rows(folder)
    complete = [r for r in rows if r["state"] == "complete"]
    if not complete:
        raise SystemExit(f"no trial of {folder / 'study.db'} completed")
    best = max(complete, key=lambda r: r["value"])
    full = full_run(best["params"], args)
    result = {
        "trials": rows, "best_trial": best["trial"], "best_params": best["params"],
        "best_is_baseline": best["baseline"], "full": full, "full_val_miou": full["mIoU"],
        "template_val_miou": TEMPLATE_VAL, "passed": full["mIoU"] >= TEMPLATE_VAL,
        "settings": {"trials": args.trials, "trial_steps": args.trial_steps, "val_every": args.val_every,
                     "startup_trials": args.startup_trials, "seed": args.seed, "space": SPACE,
                     "trial_warmup": round(TEMPLATE_WARMUP * args.trial_steps / FULL_STEPS)},
        "sweep_s": sweep_s, "command": " ".join(["python", *cmd[1:]]),
        "machine": machine_info(args.threads, gflops),
        "commit": commit,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep_camvid.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "sweep_camvid.md").write_text(markdown(result))
    if (folder / "parallel_coordinate.png").exists():
        shutil.copy(folder / "parallel_coordinate.png", args.out / "sweep_camvid_parallel_coordinate.png")
    print(markdown(result), flush=True)


def markdown(r: dict) -> str:
    s, m, full = r["settings"], r["machine"], r["full"]
    keys = list(s["space"])
    head = ["trial", "state", "short-trial val mIoU", *[k.rsplit(".", 1)[-1] for k in keys], "validations", "s"]
    lines = [
        "# `vitdense sweep` on CamVid: short trials, then the full budget at the best",
        "",
        f"`python benchmarks/sweep_camvid.py` at {r['commit']}; {m['cpu']}, {m['threads']} threads, fp32 matmul "
        f"{m['matmul_fp32_gflops']} GFLOP/s (load average {m['load_average'][0]:.1f}: a shared machine).",
        f"{len(r['trials'])} trials of {s['trial_steps']} steps x 8 (warmup {s['trial_warmup']}), a validation every "
        f"{s['val_every']} steps, median pruning after {s['startup_trials']} finished trials, TPE seed 0; trial 0 is "
        "the template's own values. The space: "
        + "; ".join(f"{k.rsplit('.', 1)[-1]} {d['low']}..{d['high']}{' (log)' if d.get('log') else ''}"
                    for k, d in s["space"].items()) + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]  # fmt: skip
    for t in r["trials"]:
        value = "" if t["value"] is None else f"{t['value']:.4f}"
        reports = ", ".join(f"{v:.3f}" for v in t["reports"].values())
        state = t["state"] + (" (template)" if t["baseline"] else "") + (" **best**" if t["trial"] == r["best_trial"]
                                                                          else "")  # fmt: skip
        params = [f"{t['params'][k]:.3g}" if k in t["params"] else "" for k in keys]
        seconds = "" if t["seconds"] is None else f"{t['seconds']:.0f}"
        lines.append("| " + " | ".join([str(t["trial"]), state, value, *params, reports, seconds]) + " |")
    verdict = ">=" if r["passed"] else "<"
    lines += [
        "",
        f"Full budget ({full['steps']} x {full['batch']}, seed {s['seed']}) at trial {r['best_trial']}'s values "
        f"({'the template itself' if r['best_is_baseline'] else 'not the template'}): **{full['mIoU']:.4f}** val "
        f"mIoU, {verdict} the template's {r['template_val_miou']:.3f}. Row `{full['name']}` of "
        f"benchmarks/results/recipes/results.json ({full['train_s']:.0f} s training at {full['gflops']:.0f} GFLOP/s).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
