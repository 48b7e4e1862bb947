"""int8 against fp32 ONNX on val: the metric before and after and the CPU time per image, through the real CLI.

    python benchmarks/int8.py --recipe hymenoptera                 # ants vs bees, ImageNet ViT-Ti fine-tuned at 224
    python benchmarks/int8.py --recipe quickstart_classification   # configs/quickstart_classification.yaml
    python benchmarks/int8.py --recipe quickstart                  # the segmentation quickstart (mIoU)

Each recipe fits its config (``vitdense fit``), then ``vitdense export --format onnx --quantize int8 --calibration N``
writes the fp32 graph, a statically quantised copy (QDQ, per-channel int8 weights, activations calibrated on the
first N val images; ``deploy.onnx_runner.kept_in_fp32`` says which matmuls stay fp32) and the comparison: the val
metric of both (accuracy, or mIoU over the whole val split), how often they agree, and the seconds per image of
each, one image at a time on onnxruntime's CPU provider, the two alternating image by image. Latency depends on the
machine: each row keeps the fp32 matmul rate measured just before (GFLOP/s, torch at --threads threads) and the
1-minute load average, so a shared or busy machine shows in the row. Rows go to <out>/results.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import torch
from machine import matmul_gflops  # benchmarks/machine.py

from vitdense.cli.entry import main as vitdense_main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WEIGHTS = SHARED / "weights" / "vit_tiny_patch16_224.safetensors"
RECIPES = {
    "hymenoptera": ("classification_folder.yaml", [
        "--data.root", str(SHARED / "data" / "hymenoptera_sample"), "--model.backbone.pretrained", str(WEIGHTS),
        "--data.num_workers", "0", "--trainer.max_epochs", "30", "--seed_everything", "0"]),
    "quickstart_classification": ("quickstart_classification.yaml", []),
    "quickstart": ("quickstart.yaml", []),
}  # fmt: skip


def run(recipe: str, calibration: int, work: Path) -> dict:
    """Fit the recipe, export it with int8, and return export's comparison report."""
    config, overrides = RECIPES[recipe]
    config_path = str(REPO / "configs" / config)
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]
    start = time.perf_counter()
    vitdense_main(["fit", "--config", config_path, *overrides, *quiet, "--trainer.default_root_dir", str(work)])
    fit_seconds = time.perf_counter() - start
    (ckpt,) = work.glob("**/checkpoints/last.ckpt")
    output = work / f"{recipe}.onnx"
    vitdense_main(["export", "--config", config_path, "--ckpt_path", str(ckpt), "--format", "onnx", "--output",
                   str(output), "--quantize", "int8", "--calibration", str(calibration), *overrides])  # fmt: skip
    report = json.loads(output.with_name(f"{recipe}.int8.json").read_text())
    int8 = output.with_name(f"{recipe}.int8.onnx")
    megabytes = {key: sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*")) / 1e6  # + external weights
                 for key, path in (("fp32_mb", output), ("int8_mb", int8))}  # fmt: skip
    return {**report, **{k: round(v, 2) for k, v in megabytes.items()}, "fit_seconds": round(fit_seconds, 1),
            "calibration": min(calibration, report["images"])}  # fmt: skip


COLUMNS = ("recipe", "metric", "fp32", "int8", "change", "agreement", "val images", "calibration", "fp32 ms",
           "int8 ms", "speedup", "MB fp32 / int8", "GFLOP/s", "load", "commit")  # fmt: skip
NOTE = """agreement: the share of val predictions (classes, or pixels) on which int8 and fp32 agree. ms: seconds per
image x 1000, one image at a time, fp32 and int8 alternating, onnxruntime's CPU provider on all of this machine's
cores. GFLOP/s: fp32 1024x1024 torch matmul just before the run. load: the 1-minute load average then (above the
core count, the CPU was shared and both latencies are inflated)."""


def write_table(results: dict, out: Path) -> None:
    lines = ["# int8 (onnxruntime static QDQ) against fp32 ONNX on val", "", "| " + " | ".join(COLUMNS) + " |",
             "| --- " * len(COLUMNS) + "|"]  # fmt: skip
    for name, r in results.items():
        cells = [name, r["metric"], f"{r['fp32']:.4f}", f"{r['int8']:.4f}", f"{r['change']:+.4f}",
                 f"{r['agreement']:.4f}", r["images"], r["calibration"], f"{r['fp32_s_per_image'] * 1000:.1f}",
                 f"{r['int8_s_per_image'] * 1000:.1f}", f"x{r['speedup']:.2f}",
                 f"{r['fp32_mb']:.1f} / {r['int8_mb']:.1f}", f"{r['gflops']:.0f}", f"{r['load']:.1f}",
                 r["commit"]]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", NOTE]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=sorted(RECIPES), nargs="+", required=True)
    p.add_argument("--calibration", type=int, default=32, help="val images that calibrate the int8 ranges")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "int8")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    for recipe in args.recipe:
        gflops, load = matmul_gflops(), os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as work:
            row = run(recipe, args.calibration, Path(work))
        results[recipe] = {**row, "gflops": round(gflops, 1), "load": round(load, 2), "threads": args.threads,
                           "cpu_count": os.cpu_count(), "commit": commit.strip()}  # fmt: skip
        print(f"[int8] {recipe}: {results[recipe]}", flush=True)
        path.write_text(json.dumps(results, indent=1))
    write_table(results, args.out)


if __name__ == "__main__":
    main()
