"""Scene prediction in bounded memory: peak RSS and Mpx/s of ```inference.scenes.predict_scene` on a large GeoTIFF.

    python benchmarks/scenes.py --size 20000          # the issue's 20000 x 20000 scene (hours on 2 CPU cores)
    python benchmarks/scenes.py --size 1500 --size 20000 --height 1000   # 1500 x 1000 and 20000 x 1000 (wide strips)

A synthetic 3-band uint8 scene (smooth fields plus noise, tiled and compressed) is written block by block in a child
process, then each size is predicted in a fresh process with ViT-Ti + UPerNet (random weights: speed and memory do
not depend on them) at crop 224, stride 149, batch 8, and that process reports its peak RSS. Prints one row per size
and writes JSON (--out). The matmul rate of the machine, measured in the same run, is printed beside the times.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_scene(path: Path, size: int, block: int = 512, height: int | None = None) -> None:
    """A ``size`` wide (``height`` high, default square) 3-band uint8 GeoTIFF written one block row at a time."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    height = height or size
    profile = {"driver": "GTiff", "height": height, "width": size, "count": 3, "dtype": "uint8", "tiled": True,
               "blockxsize": block, "blockysize": block, "compress": "deflate", "crs": "EPSG:32633",
               "transform": from_origin(500000, 4600000, 10, 10)}  # fmt: skip
    rng = np.random.default_rng(0)
    x = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, height, block):
            h = min(block, height - top)
            y = np.arange(top, top + h, dtype=np.float32)[:, None]
            fields = [np.sin(y / (97 + 31 * c)) * np.cos(x[None] / (89 + 17 * c)) for c in range(3)]
            noise = rng.integers(0, 24, (3, h, size), dtype=np.uint8)
            data = ((np.stack(fields) + 1) * 115).astype(np.uint8) + noise
            dst.write(data, window=Window(0, top, size, h))


def predict(path: Path, output: Path, batch: int, threads: int) -> dict:
    """Predict ``path`` in this process and return the timings and the process's peak RSS."""
    import torch

    from vitdense import SegmentationTask
    from vitdense.inference.scenes import predict_scene

    torch.set_num_threads(threads)
    task = SegmentationTask(backbone="vit_tiny_patch16_224", num_classes=11, img_size=224,
                            head={"channels": 128}, inference={"mode": "slide", "crop": [224, 224],
                                                               "stride": [149, 149]})  # fmt: skip
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    summary = predict_scene(task, path, output, batch_size=batch)
    return {"windows": summary.windows, "mpx": summary.pixels / 1e6, "seconds": summary.seconds,
            "mpx_per_s": summary.pixels / 1e6 / summary.seconds, "rss_after_model_gb": rss_model,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # fmt: skip


def matmul_gflops(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(2048, 2048)
    a @ a
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    return 2 * 2048**3 * 10 / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, action="append", help="scene side in pixels (repeatable; default 4000)")
    parser.add_argument("--height", type=int, help="scene height (default: square); memory depends on neither side")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scenes" / "results.json")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one measurement in a fresh process: write <size> <path> | predict <path> <output> <json>
        kind, a, b, c = args.child
        if kind == "write":
            write_scene(Path(b), int(a), height=int(c) if c != "-" else None)
        else:
            Path(c).write_text(json.dumps(predict(Path(a), Path(b), args.batch, args.threads)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.size or [4000]:
            scene, output, result = Path(tmp) / f"scene{size}.tif", Path(tmp) / f"classes{size}.tif", Path(tmp) / "r"
            height = str(args.height) if args.height else "-"
            subprocess.run([sys.executable, __file__, "--child", "write", str(size), str(scene), height], check=True)
            subprocess.run([sys.executable, __file__, "--child", "predict", str(scene), str(output), str(result),
                            "--batch", str(args.batch), "--threads", str(args.threads)], check=True)  # fmt: skip
            row = {"size": size, "height": args.height or size, **json.loads(result.read_text())}
            rows.append(row)
            print(f"{size} x {row['height']}: {row['windows']} windows, {row['seconds']:.0f} s, "
                  f"{row['mpx_per_s']:.3f} Mpx/s, "
                  f"peak RSS {row['peak_rss_gb']:.2f} GB (model loaded: {row['rss_after_model_gb']:.2f} GB)",
                  flush=True)  # fmt: skip
    gflops = matmul_gflops(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} threads, fp32 matmul "
          f"{gflops:.0f} GFLOP/s")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "gflops": gflops, "threads": args.threads, "batch": args.batch,
                                    "crop": 224, "stride": 149, "model": "vit_tiny_patch16_224 + UPerNet 128"},
                                   indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
