"""Sweep acceptance (#21) on the quickstart: a sweep of 6 trials x 2 epochs finishes, prunes at least one trial,
resumes after being killed without running a trial twice, and its best YAML re-fits to the reported metric.

    python benchmarks/sweep_quickstart.py                 # 6 trials x 2 epochs, killed after 2 finished trials
    python benchmarks/sweep_quickstart.py --trials 6 --epochs 2 --kill-after 2 --threads 2

Everything runs through the real command line, each step a process of its own:

1. the config is configs/quickstart.yaml with ``max_epochs: --epochs`` and a validation after every epoch (its own
   ``check_val_every_n_epoch: 2`` would give a 2-epoch trial one validation, at its end, where pruning saves nothing);
2. ``python -m vitdense sweep`` starts; once ``--kill-after`` trials have finished and the next has trained for a few
   seconds, the process gets SIGKILL (no chance to clean up, as when a machine goes away);
3. the same command runs again and finishes the study;
4. the SQLite study is checked: the trials finished before the kill are unchanged (same values, same end times), the
   killed trial is marked failed, 6 trials finished or were pruned, every trial has one config file and at most one
   run folder (a trial run twice would have a second ``version_N``), and no two trials drew the same values;
5. ``python -m vitdense fit --config best.yaml`` re-fits the best trial (same seed) and its best val/mIoU (from its
   summary.json) is compared with the study's.

Writes <out>/sweep_quickstart.json and .md with the machine (CPU, threads, fp32 matmul GFLOP/s) and the commit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml
from machine import machine_info  # benchmarks/machine.py
from recipes import git_commit, matmul_gflops

REPO = Path(__file__).resolve().parents[1]
SPACE = {
    "model.init_args.optimizer.lr": {"type": "float", "low": 1.0e-4, "high": 3.0e-2, "log": True},
    "model.init_args.scheduler.warmup_steps": {"type": "int", "low": 0, "high": 60, "step": 30},
    "model.init_args.backbone.drop_path_rate": {"type": "categorical", "choices": [0.0, 0.1]},
}
FINISHED = ("COMPLETE", "PRUNED")


def trials(db: Path) -> list[dict]:
    """Every trial of the study: number, state, value, start and end times, parameters (read-only SQL, so the running
    sweep is never locked out for long)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
            rows = con.execute(
                "SELECT t.trial_id, t.number, t.state, v.value, t.datetime_start, t.datetime_complete FROM trials t "
                "LEFT JOIN trial_values v ON v.trial_id = t.trial_id ORDER BY t.number"
            ).fetchall()
            params = con.execute("SELECT trial_id, param_name, param_value FROM trial_params").fetchall()
    except sqlite3.OperationalError:  # the sweep has not created its tables yet
        return []
    out = []
    for trial_id, number, state, value, start, end in rows:
        values = {name: decode(name, v) for tid, name, v in params if tid == trial_id}
        out.append({"number": number, "state": state, "value": value, "start": start, "end": end, "params": values})
    return out


def decode(name: str, value: float) -> object:
    """A parameter as the trial used it (Optuna stores a categorical as the index of its choice)."""
    dist = SPACE.get(name, {})
    if dist.get("type") == "categorical":
        return dist["choices"][int(value)]
    return int(value) if dist.get("type") == "int" else value


def sweep_command(
    config: Path, space: Path, folder: Path, n: int, percentile: float | None, baseline: str = "false"
) -> list[str]:
    cmd = [sys.executable, "-m", "vitdense", "sweep", "--config", str(config), "--space", str(space),
           "--trials", str(n), "--output", str(folder), "--baseline_trial", baseline]  # fmt: skip
    return cmd + (["--prune_percentile", str(percentile)] if percentile is not None else [])


def run_until_killed(cmd: list[str], db: Path, kill_after: int, log: Path, env: dict, grace: float) -> dict:
    """Start the sweep; SIGKILL it once ``kill_after`` trials finished and the next one has run ``grace`` seconds."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
    running_since = None
    while proc.poll() is None:
        time.sleep(1.0)
        state = trials(db)
        done = sum(t["state"] in FINISHED for t in state)
        running = [t for t in state if t["state"] == "RUNNING"]
        if done >= kill_after and running:
            running_since = running_since or time.time()
            if time.time() - running_since >= grace:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return {"killed": True, "finished_before_kill": done, "running_at_kill": running[0]["number"]}
    raise SystemExit(f"the sweep ended (exit code {proc.returncode}) before it could be killed; see {log}")


def summary_metric(root: Path) -> tuple[float, dict]:
    """The best monitored value of the one fit under ``root`` (its summary.json)."""
    found = sorted(root.rglob("summary.json"))
    if len(found) != 1:
        raise SystemExit(f"expected one summary.json under {root}, found {len(found)}")
    summary = json.loads(found[0].read_text())
    return float(summary["best"]), summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--kill-after", type=int, default=2, help="finished trials before the kill")
    p.add_argument("--grace", type=float, default=5.0, help="seconds the next trial runs before the kill")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)), help="torch threads")
    p.add_argument("--prune-percentile", type=float, help="vitdense sweep --prune_percentile (default: its own, 50)")
    p.add_argument(
        "--baseline-trial",
        choices=("true", "false"),
        default="false",
        help="vitdense sweep --baseline_trial; false, as when the recorded results were measured",
    )
    p.add_argument("--name", default="sweep_quickstart", help="results file name, without extension")
    p.add_argument("--tolerance", type=float, default=0.005, help="re-fit vs study metric")
    p.add_argument("--work", type=Path, default=Path("/tmp/vitdense_sweep_quickstart"), help="scratch (replaced)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    import torch

    torch.set_num_threads(args.threads)
    gflops, commit = matmul_gflops(), git_commit()

    cfg = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    cfg["trainer"].update(max_epochs=args.epochs, check_val_every_n_epoch=1, default_root_dir=str(args.work / "runs"))
    config, space, folder = args.work / "sweep_quickstart.yaml", args.work / "space.yaml", args.work / "sweep"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    space.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    db, cmd = (
        folder / "study.db",
        sweep_command(config, space, folder, args.trials, args.prune_percentile, args.baseline_trial),
    )

    start = time.perf_counter()
    kill = run_until_killed(cmd, db, args.kill_after, args.work / "sweep_1.log", env, args.grace)
    before = trials(db)
    print(f"killed: {kill}", flush=True)
    with open(args.work / "sweep_2.log", "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    sweep_s = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"the resumed sweep failed (exit code {rc}); see {args.work / 'sweep_2.log'}")
    after = trials(db)

    finished_before = [t for t in before if t["state"] in FINISHED]
    unchanged = all(t == after[t["number"]] for t in finished_before)
    killed_trial = after[kill["running_at_kill"]]
    finished = [t for t in after if t["state"] in FINISHED]
    pruned = [t for t in after if t["state"] == "PRUNED"]
    versions = {t["number"]: sorted(p.name for p in (folder / "runs" / f"trial_{t['number']:03d}").glob("version_*"))
                for t in after}  # fmt: skip
    configs = sorted(p.name for p in (folder / "trials").glob("trial_*.yaml"))
    draws = [json.dumps(t["params"], sort_keys=True) for t in after]
    once = all(len(v) <= 1 for v in versions.values()) and len(configs) == len(after) == len(set(draws))

    complete = [t for t in after if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"])
    refit_root = args.work / "refit"
    refit_cmd = [sys.executable, "-m", "vitdense", "fit", "--config", str(folder / "best.yaml"),
                 "--trainer.default_root_dir", str(refit_root), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    start_fit = time.perf_counter()
    with open(args.work / "refit.log", "w") as out:
        rc = subprocess.run(refit_cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    if rc != 0:
        raise SystemExit(f"the re-fit failed (exit code {rc}); see {args.work / 'refit.log'}")
    refit, summary = summary_metric(refit_root)
    trial_value, _ = summary_metric(folder / "runs" / f"trial_{best['number']:03d}")

    checks = {
        "finishes": len(finished) == args.trials,
        "prunes_at_least_one": len(pruned) >= 1,
        "killed_trial_failed_not_rerun": killed_trial["state"] == "FAIL" and len(versions[killed_trial["number"]]) <= 1,
        "finished_trials_unchanged_by_resume": unchanged and len(finished_before) >= args.kill_after,
        "no_trial_run_twice": once,
        "refit_within_tolerance": abs(refit - best["value"]) <= args.tolerance,
    }
    result = {
        "trials": args.trials, "epochs": args.epochs, "prune_percentile": args.prune_percentile or 50.0,
        "kill": kill, "space": SPACE,
        "table": [{k: t[k] for k in ("number", "state", "value", "params")} for t in after],
        "finished": len(finished), "pruned": len(pruned), "failed": sum(t["state"] == "FAIL" for t in after),
        "best_trial": best["number"], "best_value": best["value"], "best_trial_summary_value": trial_value,
        "refit_value": refit, "refit_difference": refit - best["value"], "refit_s": time.perf_counter() - start_fit,
        "sweep_s": sweep_s, "checks": checks, "passed": all(checks.values()),
        "machine": machine_info(args.threads, gflops),
        "commit": commit, "monitor": summary["monitor"],
        "commands": {"sweep": " ".join(cmd[1:]), "refit": " ".join(refit_cmd[1:])},
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result), flush=True)
    if not result["passed"]:
        raise SystemExit(1)


def markdown(r: dict) -> str:
    keys = list(r["space"])
    short = [k.rsplit(".", 1)[-1] for k in keys]
    m = r["machine"]
    lines = [
        f"# Sweep on the quickstart: {r['trials']} trials x {r['epochs']} epochs, killed and resumed",
        "",
        f"`python benchmarks/sweep_quickstart.py` at {r['commit']}; {m['cpu']}, {m['threads']} threads, fp32 matmul "
        f"{m['matmul_fp32_gflops']} GFLOP/s (load average {m['load_average'][0]:.1f} at the end: a shared machine).",
        f"Pruning: a trial in the bottom {r.get('prune_percentile', 50.0):g}% of the finished trials at a validation "
        "(50: the median pruner), after 2 finished trials; a validation after each epoch.",
        f"Sweep {r['sweep_s']:.0f} s in all; SIGKILL after {r['kill']['finished_before_kill']} finished trials, "
        f"during trial {r['kill']['running_at_kill']}, then the same command again.",
        "",
        "| trial | state | " + r["monitor"] + " | " + " | ".join(short) + " |",
        "|---|---|---|" + "---|" * len(keys),
    ]
    for t in r["table"]:
        value = "" if t["value"] is None else f"{t['value']:.4f}"
        params = " | ".join(_fmt(t["params"].get(k)) for k in keys)
        lines.append(f"| {t['number']} | {t['state'].lower()} | {value} | {params} |")
    lines += [
        "",
        f"Finished {r['finished']} (pruned {r['pruned']}: the value of a pruned trial is the one it was pruned at), "
        f"failed {r['failed']} (the trial killed mid-fit; not run again).",
        f"Best: trial {r['best_trial']}, {r['monitor']} {r['best_value']:.4f}; `fit --config best.yaml` (same seed) "
        f"gives {r['refit_value']:.4f} ({r['refit_difference']:+.4f}).",
        "",
        "| check | result |",
        "|---|---|",
        *[f"| {k.replace('_', ' ')} | {'pass' if v else 'FAIL'} |" for k, v in r["checks"].items()],
        "",
    ]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
