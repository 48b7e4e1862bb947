"""Segmentation of scenes of any size in bounded memory: the raster is read window by window, the windows' logits are
blended as sliding-window inference blends them (mean over the windows covering a pixel, the same window grid as
``tasks.inference.slide_logits``), and the class map is written one block row at a time into a tiled, compressed
GeoTIFF with the source's CRS and transform (and a colour table of the class colours).

Memory is the window batch plus one buffer of logits ``num_classes x (crop + stride + block) x (stripe + 2 crop)``,
whatever the scene's size: the scene runs in column stripes (2048 pixels by default; windows across a stripe border
run twice, about ``crop / stripe`` more compute), each top to bottom, written tile by tile.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from vitdense.data.formats.raster import Raster, model_input
from vitdense.tasks.inference import check_window_stride, window_starts


@dataclass
class SceneSummary:
    """What ``predict_scene`` did: files written, windows run, pixels, seconds."""

    output: Path
    probabilities: Path | None
    windows: int
    pixels: int
    seconds: float

    def __str__(self) -> str:
        rate = self.pixels / max(self.seconds, 1e-9) / 1e6
        probs = f" and {self.probabilities}" if self.probabilities else ""
        return (f"wrote {self.output}{probs}: {self.windows} windows over {self.pixels / 1e6:.1f} Mpx in "
                f"{self.seconds:.1f} s ({rate:.2f} Mpx/s)")  # fmt: skip


def _window_logits(task: Any, images: torch.Tensor, flip: bool) -> torch.Tensor:
    logits = task(images)
    if not flip:
        return logits
    probs = logits.softmax(1) + task(images.flip(-1)).flip(-1).softmax(1)
    return (probs / 2).clamp_min(1e-12).log()


def _coverage(starts: list[int], crop: int, lo: int, hi: int) -> torch.Tensor:
    """How many windows (``crop`` long, at ``starts``) cover each position of ``[lo, hi)`` along one axis."""
    count = torch.zeros(hi - lo)
    for s in starts:
        a, b = max(s, lo), min(s + crop, hi)
        if b > a:
            count[a - lo : b - lo] += 1
    return count


@torch.no_grad()
def scene_logit_tiles(
    task: Any,
    raster: Raster,
    crop: tuple[int, int],
    stride: tuple[int, int],
    batch_size: int = 8,
    block: int = 256,
    flip: bool = False,
    stripe: int = 2048,
) -> Iterator[tuple[int, int, torch.Tensor, np.ndarray]]:
    """Blended logits of ``raster``, tile by tile: ``(top, left, logits (K, h, w), valid (h, w))``.

    The scene is cut into column stripes ``stripe`` pixels wide (a multiple of ``block``), each run top to bottom
    with every window of the slide grid that overlaps it (windows across a stripe border run in both stripes), so a
    pixel gets the mean of the same windows as ``slide_logits`` on the whole scene. Within a stripe, rows are final
    once the next window row starts below them; they come out in tiles ``block`` rows high (or a multiple; the last
    may be less). Memory: ``K x (crop + stride + block) x (stripe + 2 crop)`` floats, whatever the scene's size.
    Pixels without data enter the model at the band mean (zero after normalisation) and are marked not valid.
    """
    check_window_stride(crop, stride)
    height, width = raster.size
    ch, cw = min(crop[0], height), min(crop[1], width)
    ys, xs = window_starts(height, ch, stride[0]), window_starts(width, cw, stride[1])
    stripe = max(block, stripe // block * block)
    device = next(task.parameters()).device
    fill = task.backbone.mean.reshape(-1, 1).cpu()
    k = task.num_classes
    row_count = _coverage(ys, ch, 0, height)
    for x0 in range(0, width, stripe):
        x1 = min(x0 + stripe, width)
        columns = [x for x in xs if x < x1 and x + cw > x0]
        left, right = columns[0], columns[-1] + cw
        col_count = _coverage(columns, cw, left, right)
        capacity = min(height, ch + stride[0] + block)
        total = torch.zeros(k, capacity, right - left)
        valid = np.zeros((capacity, right - left), bool)
        top = 0  # scene row of the buffer's first row
        for r, y in enumerate(ys):
            for start in range(0, len(columns), batch_size):
                batch = columns[start : start + batch_size]
                images = []
                for x in batch:
                    pixels = raster.read((y, x, ch, cw))
                    ok = raster.valid(pixels)
                    image = model_input(pixels)
                    image[:, ~torch.from_numpy(ok)] = fill
                    images.append(image)
                    valid[y - top : y - top + ch, x - left : x - left + cw] = ok
                logits = _window_logits(task, torch.stack(images).to(device), flip).float().cpu()
                for x, window in zip(batch, logits, strict=True):
                    total[:, y - top : y - top + ch, x - left : x - left + cw] += window
            done = ys[r + 1] if r + 1 < len(ys) else height  # rows above the next window row are final
            end = height if done == height else top + (done - top) // block * block
            if end <= top:
                continue
            rows = end - top
            counts = row_count[top:end, None] * col_count[None, x0 - left : x1 - left]
            yield top, x0, total[:, :rows, x0 - left : x1 - left] / counts, valid[:rows, x0 - left : x1 - left].copy()
            rest = total.shape[1] - rows
            total[:, :rest] = total[:, rows:].clone()
            total[:, rest:] = 0
            valid[:rest] = valid[rows:].copy()
            valid[rest:] = False
            top = end


def predict_scene(
    task: Any,
    source: str | Path,
    output: str | Path,
    crop: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    batch_size: int = 8,
    bands: list[int] | None = None,
    nodata: float | None = None,
    probabilities: bool = False,
    block: int = 256,
    stripe: int = 2048,
) -> SceneSummary:
    """Segment the raster ``source`` into a new GeoTIFF ``output`` (class ids, the source's CRS and transform).

    Args:
        task: a ``SegmentationTask`` (its ``inference`` crop, stride and flip are the defaults here).
        source: a GeoTIFF/TIFF or ``.npy`` raster of any size.
        output: the class map to write (must not exist); tiled (``block`` pixels), deflate-compressed, nodata 255
            (65535 above 255 classes), a colour table of the task's class colours.
        crop: window size; default ``inference.crop``, else the backbone's img_size.
        stride: step between windows; default ``inference.stride``, else 2/3 of the crop.
        batch_size: windows per forward pass.
        bands: 0-based band positions to read (the bands the model was trained on, in its order); default all.
        nodata: value of pixels without data; default the file's.
        probabilities: also write ``<output>_probs.tif``, one uint8 band per class (probability x 255).
        block: tile size of the written GeoTIFF (and the row step of writing).
        stripe: width of the column stripes the scene is run in (memory; results do not depend on it).
    """
    import rasterio
    from rasterio.windows import Window

    cfg = getattr(task, "inference_cfg", {}) or {}
    if [float(s) for s in cfg.get("scales", [1.0])] != [1.0]:
        raise ValueError(f"inference.scales: {cfg['scales']} is not applied to scenes; predict scenes at scale 1.0.")
    if getattr(task, "keep_largest", None):
        rank_zero_warn(f"inference.keep_largest: the model keeps {[task.class_names[k] for k in task.keep_largest]} as "
                       "one solid object per image; a scene holds many, so its class map is the most likely class of "
                       "each pixel, every region kept.")  # fmt: skip
    crop = tuple(crop or cfg.get("crop") or task.input_size())
    stride = tuple(stride or cfg.get("stride") or (max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3)))
    output = Path(output)
    probs_path = output.with_name(f"{output.stem}_probs.tif") if probabilities else None
    for path in (output, probs_path):
        if path is not None and path.exists():
            raise FileExistsError(f"'{path}' exists; choose another output (nothing was written).")
    output.parent.mkdir(parents=True, exist_ok=True)
    k = task.num_classes
    dtype, fill = (np.uint8, 255) if k < 255 else (np.uint16, 65535)
    task.eval()
    started = time.perf_counter()
    # GDAL keeps decoded blocks in a cache of 5% of the machine's memory by default: bounded, but up to a gigabyte or
    # more; 128 MB holds the blocks a stripe's window rows touch.
    with rasterio.Env(GDAL_CACHEMAX=128), Raster(source, bands, nodata) as raster:
        if raster.count and len(raster.bands) != task.backbone.in_chans:
            raise ValueError(
                f"'{raster.path}' gives {len(raster.bands)} band(s) (bands: {raster.bands}) but the model takes "
                f"backbone.in_chans={task.backbone.in_chans}. Select the model's bands with --bands."
            )
        profile = {"driver": "GTiff", "height": raster.height, "width": raster.width, "crs": raster.crs,
                   "transform": raster.transform, "tiled": True, "blockxsize": block, "blockysize": block,
                   "compress": "deflate"}  # fmt: skip
        palette = task.palette() if hasattr(task, "palette") else None
        windows = len(window_starts(raster.height, crop[0], stride[0])) * len(
            window_starts(raster.width, crop[1], stride[1])
        )
        with rasterio.open(output, "w", count=1, dtype=dtype, nodata=fill, **profile) as dst:
            if palette is not None and k <= 256:
                dst.write_colormap(1, {c: tuple(palette[3 * c : 3 * c + 3]) for c in range(k)})
            probs_dst = rasterio.open(probs_path, "w", count=k, dtype=np.uint8, **profile) if probs_path else None
            try:
                tiles = scene_logit_tiles(task, raster, crop, stride, batch_size, block, bool(cfg.get("flip", False)),
                                          stripe)  # fmt: skip
                for top, left, logits, valid in tiles:
                    window = Window(left, top, logits.shape[2], logits.shape[1])
                    classes = logits.argmax(0).numpy().astype(dtype)
                    classes[~valid] = fill
                    dst.write(classes[None], window=window)
                    if probs_dst is not None:
                        probs = (logits.softmax(0) * 255).round().numpy().astype(np.uint8)
                        probs[:, ~valid] = 0
                        probs_dst.write(probs, window=window)
            finally:
                if probs_dst is not None:
                    probs_dst.close()
        pixels = raster.height * raster.width
    return SceneSummary(output, probs_path, windows, pixels, time.perf_counter() - started)


def scene_main(args: list[str]) -> str:
    """``vitdense scene --config X --ckpt_path Y --input scene.tif [...]`` (or ``--model export.safetensors``):
    segment rasters of any size into georeferenced GeoTIFF class maps (see ``predict_scene``)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="vitdense scene",
        description="Segment GeoTIFF/.npy rasters of any size window by window into tiled, compressed GeoTIFF class "
        "maps with the source's CRS and transform (memory: the window batch and one strip of logits, not the scene). "
        "Every other argument is a `fit` argument (--model.*, --data.*).",
    )
    parser.add_argument("--config", help="the config the checkpoint was trained with (or the run folder's config.yaml)")
    parser.add_argument("--ckpt_path", help="the checkpoint to predict with (with --config)")
    parser.add_argument("--model", type=Path, help="a `vitdense export --format safetensors` file, instead of both")
    parser.add_argument("--input", type=Path, nargs="+", required=True, help="raster file(s) to segment")
    parser.add_argument("--output", type=Path, help="folder for <input stem>.tif (default: predictions-<time>)")
    parser.add_argument("--crop", type=int, nargs=2, help="window height and width (default: inference.crop)")
    parser.add_argument("--stride", type=int, nargs=2, help="step between windows (default: 2/3 of the crop)")
    parser.add_argument("--batch", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--bands", type=int, nargs="+", help="0-based bands to read, in the model's order")
    parser.add_argument("--nodata", type=float, help="value of pixels without data (default: the file's)")
    parser.add_argument("--probabilities", action="store_true", help="also write <stem>_probs.tif (uint8 x 255)")
    own, rest = parser.parse_known_args(args)
    from vitdense.engine.restore import load_for_inference

    device = "cuda" if torch.cuda.is_available() else "cpu"
    task = load_for_inference(own.model, own.config, own.ckpt_path, rest, parser.error).to(device)
    folder = own.output or Path(f"predictions-{time.strftime('%Y%m%d-%H%M%S')}")
    lines = []
    for source in own.input:
        summary = predict_scene(task, source, folder / f"{source.stem}.tif", own.crop, own.stride, own.batch,
                                own.bands, own.nodata, own.probabilities)  # fmt: skip
        lines.append(str(summary))
        print(f"[vitdense] {summary}", flush=True)
    return "\n".join(lines)
