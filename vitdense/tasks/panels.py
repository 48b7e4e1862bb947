"""Prediction panels: a fixed set of val images drawn with the model's predictions each validation epoch of a fit, and
sent to every logger that takes images (TensorBoard, MLflow, W&B) through one adapter, ``log_image``.

Segmentation: one row per image, ``image | truth | prediction | errors`` (wrong pixels in the predicted class's
colour over the dimmed image), a class legend below. Detection and instance segmentation: ``truth | prediction``
(boxes, masks, class names and scores). Classification: a grid of images captioned with true and predicted class.

The images are chosen once, on the first validation of the fit, to cover the classes (greedy over up to ``max_scan``
val items spread over the split), and stay the same every epoch. The cost is one inference (the task's own val
inference setting) over those images per validation epoch, on the first process only.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning_utilities.core.apply_func import apply_to_collection
from PIL import Image, ImageDraw, ImageFont

TAG = "val/panels"
HEADER = 14  # height of the column titles above the tiles
CAPTION = 26  # height of the two caption lines below a classification tile
MIN_TILE, MAX_TILE = 128, 256  # small images are enlarged (nearest, whole factors), large ones reduced
IGNORE_COLOR = (128, 128, 128)
SEGMENTATION_COLUMNS = ("image", "truth", "prediction", "errors")
DETECTION_COLUMNS = ("truth", "prediction")
MIN_SCORE = 0.3  # detections drawn: those scoring at least this
_FONT = ImageFont.load_default()


def tile_size(height: int, width: int) -> tuple[int, int]:
    """Size at which an image of ``height x width`` is drawn: enlarged by a whole factor up to ``MIN_TILE`` on its long
    side (so each pixel stays a block of pixels), reduced to ``MAX_TILE`` when larger."""
    side = max(height, width)
    if side < MIN_TILE:
        factor = MIN_TILE // side
        return height * factor, width * factor
    if side > MAX_TILE:
        return max(1, round(height * MAX_TILE / side)), max(1, round(width * MAX_TILE / side))
    return height, width


def resize(array: np.ndarray, size: tuple[int, int], nearest: bool = True) -> np.ndarray:
    """An ``(H, W[, 3])`` uint8 array at ``size`` (h, w)."""
    if array.shape[:2] == tuple(size):
        return array
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array).resize((size[1], size[0]), method))


def display_image(image: torch.Tensor, rgb_bands: list[int] | None = None) -> np.ndarray:
    """A (C, H, W) image in [0, 1] as (H, W, 3) uint8: its RGB bands (the first three, or ``rgb_bands``), a single
    band as grey; nodata (NaN) black."""
    image = image.detach().float().cpu()
    image = image[list(rgb_bands or [0, 1, 2])] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
    array = torch.nan_to_num(image, nan=0.0).clamp(0, 1).permute(1, 2, 0).numpy()
    return np.round(array * 255).astype(np.uint8)


def palette_array(palette: list[int]) -> np.ndarray:
    """A flat RGB list of 256 colours as a (256, 3) uint8 array."""
    return np.asarray(palette, dtype=np.uint8).reshape(256, 3)


def colorize(mask: np.ndarray, colors: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """Class ids (H, W) as their colours (H, W, 3); ``ignore_index`` pixels grey."""
    out = colors[mask % 256]
    if ignore_index is not None:
        out[mask == ignore_index] = IGNORE_COLOR
    return out


def error_map(image: np.ndarray, pred: np.ndarray, truth: np.ndarray, colors: np.ndarray, ignore_index: int | None):
    """The image dimmed, with each wrongly predicted pixel in the colour of the class predicted there."""
    out = (image.astype(np.float32) * 0.35).astype(np.uint8)
    wrong = pred != truth
    if ignore_index is not None:
        wrong &= truth != ignore_index
    out[wrong] = colors[pred[wrong] % 256]
    return out


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill: tuple[int, int, int]) -> None:
    draw.text(xy, text, fill=fill, font=_FONT)


def legend(names: list[str], colors: np.ndarray, width: int) -> np.ndarray:
    """Colour swatch and name of every class, wrapped into lines of ``width`` pixels."""
    items, line, x = [], 0, 4
    for name in names:
        w = 14 + int(_FONT.getlength(name)) + 10
        if x + w > width and x > 4:
            line, x = line + 1, 4
        items.append((x, line, name))
        x += w
    canvas = Image.new("RGB", (width, 16 * (line + 1) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (x, row, name) in enumerate(items):
        y = 4 + 16 * row
        draw.rectangle((x, y, x + 10, y + 10), fill=tuple(int(c) for c in colors[k]), outline=(0, 0, 0))
        _text(draw, (x + 14, y), name, (0, 0, 0))
    return np.asarray(canvas)


def header(columns: tuple[str, ...], tile_width: int) -> np.ndarray:
    """The row of column titles above tiles of ``tile_width``."""
    canvas = Image.new("RGB", (tile_width * len(columns), HEADER), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(columns):
        _text(draw, (k * tile_width + 3, 1), name, (0, 0, 0))
    return np.asarray(canvas)


def stack(parts: list[np.ndarray]) -> np.ndarray:
    """Arrays (H, W, 3) one below the other, padded white on the right to the widest."""
    width = max(p.shape[1] for p in parts)
    padded = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in parts]
    return np.concatenate(padded, axis=0)


def segmentation_panel(
    images: list[np.ndarray],
    truths: list[np.ndarray],
    preds: list[np.ndarray],
    palette: list[int],
    names: list[str],
    ignore_index: int | None,
) -> np.ndarray:
    """Rows ``image | truth | prediction | errors`` under a header, with the class legend below; every tile at the
    first mask's ``tile_size`` (nearest), so the prediction of row ``r`` is at rows ``HEADER + r * th`` and columns
    ``2 * tw`` of the panel."""
    colors = palette_array(palette)
    th, tw = tile_size(*truths[0].shape)
    rows = []
    for image, truth, pred in zip(images, truths, preds, strict=True):
        image = resize(image, truth.shape, nearest=False)
        tiles = [image, colorize(truth, colors, ignore_index), colorize(pred, colors),
                 error_map(image, pred, truth, colors, ignore_index)]  # fmt: skip
        rows.append(np.concatenate([resize(t, (th, tw)) for t in tiles], axis=1))
    width = tw * len(SEGMENTATION_COLUMNS)
    return stack([header(SEGMENTATION_COLUMNS, tw), *rows, legend(names, colors, width)])


def draw_detections(
    image: np.ndarray,
    det: dict[str, torch.Tensor],
    colors: np.ndarray,
    names: list[str],
    size: tuple[int, int],
    min_score: float | None = None,
    max_boxes: int = 20,
) -> np.ndarray:
    """One image at ``size`` with boxes (xyxy, image pixels), class names and scores (when ``det`` has scores: those
    at or above ``min_score``, the ``max_boxes`` best), and instance masks (when ``det`` has masks) blended in.
    Class ``k`` takes colour ``k + 1`` (colour 0 is the background's)."""
    scale_y, scale_x = size[0] / image.shape[0], size[1] / image.shape[1]
    boxes, labels = det["boxes"].detach().float().cpu(), det["labels"].detach().cpu().long()
    scores = det["scores"].detach().float().cpu() if "scores" in det else None
    keep = torch.arange(len(labels))
    if scores is not None:
        keep = keep[scores >= (min_score or 0.0)]
        keep = keep[scores[keep].argsort(descending=True)][:max_boxes]
    out = resize(image, size, nearest=False).astype(np.float32)
    if "masks" in det:
        masks = det["masks"].detach().cpu().bool().numpy()
        for i in keep.tolist()[::-1]:  # best on top
            mask = resize(masks[i].astype(np.uint8), size) > 0
            out[mask] = 0.55 * out[mask] + 0.45 * colors[(labels[i] + 1) % 256]
    canvas = Image.fromarray(out.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for i in keep.tolist():
        x0, y0, x1, y1 = (boxes[i] * torch.tensor([scale_x, scale_y, scale_x, scale_y])).tolist()
        color = tuple(int(c) for c in colors[(labels[i] + 1) % 256])
        draw.rectangle((x0, y0, x1, y1), outline=color, width=2)
        label = int(labels[i])
        text = names[label] if 0 <= label < len(names) else str(label)
        if scores is not None:
            text += f" {float(scores[i]):.2f}"
        tx, ty = x0 + 2, max(0.0, y0 - 11)
        draw.rectangle((tx - 1, ty, tx + _FONT.getlength(text) + 1, ty + 10), fill=color)
        _text(draw, (tx, ty - 1), text, (255, 255, 255) if sum(color) < 384 else (0, 0, 0))
    return np.asarray(canvas)


def detection_panel(
    images: list[np.ndarray],
    truths: list[dict[str, torch.Tensor]],
    preds: list[dict[str, torch.Tensor]],
    palette: list[int],
    names: list[str],
    min_score: float,
) -> np.ndarray:
    """Rows ``truth | prediction`` under a header, every tile at the first image's ``tile_size``, legend below."""
    colors = palette_array(palette)
    size = tile_size(*images[0].shape[:2])
    rows = []
    for image, truth, pred in zip(images, truths, preds, strict=True):
        tiles = [draw_detections(image, truth, colors, names, size),
                 draw_detections(image, pred, colors, names, size, min_score)]  # fmt: skip
        rows.append(np.concatenate(tiles, axis=1))
    width = size[1] * len(DETECTION_COLUMNS)
    return stack([header(DETECTION_COLUMNS, size[1]), *rows, legend(names, colors[1:], width)])


def classification_panel(
    images: list[np.ndarray], labels: list[int], preds: list[int], scores: list[float], names: list[str]
) -> np.ndarray:
    """A grid (about square) of the images, each captioned ``true: <name>`` and ``pred: <name> <score>`` (green when
    right, red when wrong)."""
    th, tw = tile_size(*images[0].shape[:2])
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    canvas = Image.new("RGB", (cols * tw, rows * (th + CAPTION)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (image, label, pred, score) in enumerate(zip(images, labels, preds, scores, strict=True)):
        x, y = (k % cols) * tw, (k // cols) * (th + CAPTION)
        canvas.paste(Image.fromarray(resize(image, (th, tw))), (x, y))
        _text(draw, (x + 3, y + th + 1), f"true: {names[label]}", (0, 0, 0))
        color = (0, 140, 0) if pred == label else (200, 0, 0)
        _text(draw, (x + 3, y + th + 13), f"pred: {names[pred]} {score:.2f}", color)
    return np.asarray(canvas)


def item_classes(item: dict[str, Any], ignore_index: int | None) -> set[int]:
    """The classes one dataset item shows (mask pixels, box labels or its label)."""
    if "mask" in item:
        values = torch.as_tensor(item["mask"]).unique().tolist()
        return {int(v) for v in values if v != ignore_index}
    if "target" in item:
        return {int(v) for v in torch.as_tensor(item["target"]["labels"]).tolist()}
    if "label" in item:
        return {int(item["label"])}
    return set()


def choose_items(classes: list[set[int]], count: int) -> list[int]:
    """Positions of ``count`` items that together show as many classes as possible (greedy set cover: each pick
    shows the most classes not yet shown), then the rest in order; returned sorted."""
    chosen: list[int] = []
    seen: set[int] = set()
    while len(chosen) < min(count, len(classes)):
        gains = [(len(c - seen), -i) for i, c in enumerate(classes) if i not in chosen]
        gain, neg = max(gains)
        if gain == 0:
            break
        chosen.append(-neg)
        seen |= classes[-neg]
    rest = [i for i in range(len(classes)) if i not in chosen]
    return sorted(chosen + rest[: max(0, count - len(chosen))])


def log_image(logger: Logger, tag: str, image: np.ndarray, step: int) -> bool:
    """Send an (H, W, 3) uint8 image to a Lightning logger; ``False`` when it takes no images (CSV).

    TensorBoard through ``add_image``, MLflow through its client's ``log_image`` (a step-indexed image of the run),
    W&B and any other logger with a ``log_image(key, images, step)`` through that.
    """
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(tag, image, step, dataformats="HWC")
    elif isinstance(logger, MLFlowLogger):
        logger.experiment.log_image(logger.run_id, image, key=tag.replace("/", "_"), step=step)
    elif callable(log_image := getattr(logger, "log_image", None)):
        log_image(key=tag, images=[image], step=step)
    else:
        return False
    return True


def takes_images(logger: Logger) -> bool:
    """Whether ``log_image`` can send images to ``logger``."""
    return isinstance(logger, (TensorBoardLogger, MLFlowLogger)) or callable(getattr(logger, "log_image", None))


class PredictionPanels(L.Callback):
    """Logs ``val/panels`` (see the module's docstring) after each validation of a fit, to every logger that takes
    images; does nothing (not even the extra inference) when none does.

    Args:
        count: val images on the panel (0 = off).
        min_score: detections below this score are not drawn (default ``MIN_SCORE``).
        max_scan: val items looked at (spread over the split) to choose images that cover the classes.
    """

    def __init__(self, count: int = 8, min_score: float | None = None, max_scan: int = 256) -> None:
        super().__init__()
        if count < 0:
            raise ValueError(f"log_images: {count} must be >= 0 (0 turns the panels off).")
        self.count, self.max_scan = count, max_scan
        self.min_score = MIN_SCORE if min_score is None else min_score
        self.indices: list[int] | None = None
        self.batch: Any = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.count == 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.state.fn != "fit":
            return
        loggers = [lg for lg in trainer.loggers if takes_images(lg)]
        if not loggers:
            return
        if self.batch is None:
            self.batch = self.select(trainer.val_dataloaders, pl_module)
            if self.batch is None:
                return
        panel = self.render(pl_module, self.batch)
        if panel is None:
            return
        for logger in loggers:
            log_image(logger, TAG, panel, trainer.global_step)

    def select(self, loaders: Any, pl_module: L.LightningModule) -> Any:
        """The collated batch of the chosen val items (kept on the CPU), or ``None`` without a val set."""
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__len__") or len(dataset) == 0:
            return None
        ignore = getattr(pl_module, "ignore_index", None)
        scanned = sorted({int(i) for i in np.linspace(0, len(dataset) - 1, min(len(dataset), self.max_scan))})
        classes = [item_classes(dataset[i], ignore) for i in scanned]
        self.indices = [scanned[i] for i in choose_items(classes, self.count)]
        collate = loader.collate_fn or torch.utils.data.default_collate
        shown = set().union(*(classes[scanned.index(i)] for i in self.indices))
        rank_zero_info(f"[vitdense] val panels: items {self.indices} of the val set ({len(shown)} classes shown), "
                       f"logged as '{TAG}' each validation")  # fmt: skip
        return collate([dataset[i] for i in self.indices])

    @torch.no_grad()
    def render(self, pl_module: L.LightningModule, batch: Any) -> np.ndarray | None:
        """The panel of ``batch`` with the model's current predictions, drawn by the task itself
        (``draw_panel``; ``None``: the task draws none). The model's mode is restored."""
        draw = getattr(pl_module, "draw_panel", None)
        if draw is None:
            return None
        batch = apply_to_collection(batch, torch.Tensor, lambda t: t.to(pl_module.device))
        training = pl_module.training
        pl_module.eval()
        try:
            return draw(batch, self.min_score)
        finally:
            pl_module.train(training)
