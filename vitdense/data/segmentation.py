"""Semantic segmentation data: an image/mask folder DataModule and a synthetic shapes DataModule."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
from torch.utils.data import Dataset

from vitdense.data.base import BaseDataModule, SampleCache, Split, SyntheticDataModule
from vitdense.data.io import image_size, load_image, load_mask
from vitdense.data.registry import register_datamodule
from vitdense.data.transforms import (
    pad_collate,
    random_flips,
    seed_transform,
    segmentation_eval_transform,
    segmentation_train_transform,
    to_tensor,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp")
LAYOUT = "root/{split}/images/*.png (or .jpg, ...) + root/{split}/masks/*.png with the same file stems"


def _list_files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)


def _by_stem(files: list[Path], folder: Path) -> dict[str, Path]:
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise ValueError(
                f"Two files in '{folder}' share the stem '{path.stem}' ({stems[path.stem].name}, {path.name}): "
                "images and masks are paired by stem, so keep one of them."
            )
        stems[path.stem] = path
    return stems


def _examples(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def pair_by_key(
    images: dict[str, Path], masks: dict[str, Path], image_dir: Path, mask_dir: Path, rule: str = "with the same stem"
) -> list[tuple[Path, Path]]:
    """Pair images and masks that share a key, sorted by key; raise when either side has files left unpaired."""
    no_mask = sorted(images[k].name for k in images.keys() - masks.keys())
    if no_mask:
        raise ValueError(
            f"{len(no_mask)} image(s) in '{image_dir}' have no mask {rule} in '{mask_dir}' "
            f"(e.g. {_examples(no_mask)}). Add the masks or remove those images."
        )
    no_image = sorted(masks[k].name for k in masks.keys() - images.keys())
    if no_image:
        raise ValueError(
            f"{len(no_image)} mask(s) in '{mask_dir}' have no image {rule} in '{image_dir}' "
            f"(e.g. {_examples(no_image)}). Add the images or remove those masks."
        )
    return [(images[key], masks[key]) for key in sorted(images)]


def pair_folders(image_dir: Path, mask_dir: Path) -> list[tuple[Path, Path]]:
    """Pair the images of ``image_dir`` with the masks of ``mask_dir`` by file stem."""
    images = _by_stem(_list_files(image_dir, IMAGE_EXTENSIONS), image_dir)
    if not images:
        raise ValueError(f"No images found in '{image_dir}' (looked for {', '.join(IMAGE_EXTENSIONS)}).")
    masks = _by_stem(_list_files(mask_dir, MASK_EXTENSIONS), mask_dir)
    return pair_by_key(images, masks, image_dir, mask_dir)


def _apply(transform: Callable[..., dict[str, Any]], image: np.ndarray, mask: np.ndarray | None = None) -> dict:
    seed_transform(transform)
    if mask is None:
        return transform(image=image)
    # int32: cv2 cannot resample int64 and uint8 cannot hold every class id / ignore_index
    return transform(image=image, mask=mask.astype(np.int32))


def list_images(folder: str | Path) -> list[Path]:
    """Return the image files directly inside ``folder``, sorted (extensions: png jpg jpeg bmp tif tiff webp).

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: ``folder`` holds no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder '{folder}' does not exist.")
    files = _list_files(folder, IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"No images found in '{folder}' (looked for {', '.join(IMAGE_EXTENSIONS)}).")
    return files


class SegmentationFolderDataset(Dataset):
    """Image/mask pairs from ``root/{split}/images`` and ``root/{split}/masks``, paired by file stem.

    The folder is validated when the dataset is built; mask values are checked when an item is loaded.
    Items are ``dict(image=(3, H, W) float in [0, 1], mask=(H, W) long, path=str, orig_size=(h, w),
    valid_size=(h, w))`` where ``valid_size`` is the size after the transform.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        num_classes: int,
        ignore_index: int = 255,
        transform: Callable[..., dict[str, Any]] | None = None,
        label_map: np.ndarray | None = None,
    ) -> None:
        """Scan and validate the split folder.

        Args:
            root: Dataset root holding one folder per split.
            split: Split folder name (``train``, ``val``, ``test``).
            num_classes: Number of classes; mask values must lie in ``[0, num_classes)`` or equal ``ignore_index``.
            ignore_index: Mask value of pixels left out of loss and metrics.
            transform: Albumentations pipeline; defaults to ``segmentation_eval_transform()``.
            label_map: Lookup table applied to each loaded mask (``mask = label_map[mask]``), e.g. dataset ids ->
                train ids; ``None`` keeps the stored values.
        """
        self.root = Path(root)
        self.split = split
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.transform = transform or segmentation_eval_transform()
        self.label_map = label_map
        self.samples = self._scan()

    def find_pairs(self) -> list[tuple[Path, Path]]:
        """Return the split's ``(image, mask)`` paths, sorted; subclasses override this to read other layouts."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"Dataset root '{self.root}' does not exist. Expected the layout {LAYOUT}.")
        split_dir = self.root / self.split
        if not split_dir.is_dir():
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"Split folder '{split_dir}' not found (folders in root: {found or 'none'}). "
                f"Expected the layout {LAYOUT}."
            )
        image_dir, mask_dir = split_dir / "images", split_dir / "masks"
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"Folder '{folder}' not found. Expected the layout {LAYOUT}.")
        return pair_folders(image_dir, mask_dir)

    def _scan(self) -> list[tuple[Path, Path]]:
        samples = self.find_pairs()
        mismatched = []
        for image_path, mask_path in samples:
            isize, msize = image_size(image_path), image_size(mask_path)
            if isize != msize:
                mismatched.append(f"'{image_path}' is {isize[0]}x{isize[1]} but '{mask_path}' is {msize[0]}x{msize[1]}")
        if mismatched:
            raise ValueError(
                f"{len(mismatched)} mask(s) differ in size from their image (width x height): "
                f"{'; '.join(mismatched[:5])}. Each mask must have exactly its image's size."
            )
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def class_pixel_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class: its pixels, and the pixels of the images it appears in (void left out), over the split.

        What median-frequency class weights need (SegNet; ``loss.class_weights: median_frequency``).
        """
        pixels = np.zeros(self.num_classes, np.int64)
        image_pixels = np.zeros(self.num_classes, np.int64)
        for _, mask_path in self.samples:
            mask = load_mask(mask_path)
            if self.label_map is not None:
                mask = self._relabel(mask, mask_path)
            self._check_mask(mask, mask_path)
            labelled = mask[mask != self.ignore_index].astype(np.int64)
            counts = np.bincount(labelled, minlength=self.num_classes)[: self.num_classes]
            pixels += counts
            image_pixels += (counts > 0) * labelled.size
        return pixels, image_pixels

    def _check_mask(self, mask: np.ndarray, path: Path) -> None:
        if mask.min(initial=0) >= 0 and mask.max(initial=0) < self.num_classes:
            return
        bad = np.unique(mask[((mask < 0) | (mask >= self.num_classes)) & (mask != self.ignore_index)])
        if bad.size:
            values = ", ".join(str(v) for v in bad[:20]) + (", ..." if bad.size > 20 else "")
            raise ValueError(
                f"Mask '{path}' has values [{values}] outside [0, num_classes={self.num_classes}) that are not "
                f"ignore_index={self.ignore_index}. Set num_classes to cover every class id, or set ignore_index "
                "to the value used for void pixels."
            )

    def _relabel(self, mask: np.ndarray, path: Path) -> np.ndarray:
        size = len(self.label_map)  # type: ignore[arg-type]
        if mask.min(initial=0) < 0 or mask.max(initial=0) >= size:
            raise ValueError(
                f"Mask '{path}' has values outside [0, {size}), the ids this dataset's label mapping knows "
                f"(found {int(mask.min())}..{int(mask.max())}). Check the file is an official annotation."
            )
        return self.label_map[mask]  # type: ignore[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, mask_path = self.samples[index]
        image, mask = load_image(image_path), load_mask(mask_path)
        if self.label_map is not None:
            mask = self._relabel(mask, mask_path)
        self._check_mask(mask, mask_path)
        out = _apply(self.transform, image, mask)
        return {
            "image": out["image"],
            "mask": out["mask"],
            "path": str(image_path),
            "orig_size": tuple(image.shape[:2]),
            "valid_size": tuple(out["image"].shape[-2:]),
        }


class PredictImageFolder(Dataset):
    """The images directly inside a folder, for prediction (no masks).

    Items are ``dict(image=(3, H, W) float in [0, 1], path=str, orig_size=(h, w), valid_size=(h, w))``.
    """

    def __init__(self, folder: str | Path, transform: Callable[..., dict[str, Any]] | None = None) -> None:
        """List the images of ``folder``.

        Args:
            folder: Folder of images (not searched recursively).
            transform: Albumentations pipeline; defaults to ``segmentation_eval_transform()``.
        """
        self.files = list_images(folder)
        self.transform = transform or segmentation_eval_transform()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = load_image(self.files[index])
        out = _apply(self.transform, image)
        return {
            "image": out["image"],
            "path": str(self.files[index]),
            "orig_size": tuple(image.shape[:2]),
            "valid_size": tuple(out["image"].shape[-2:]),
        }


def _read_class_names(root: Path, ignore_index: int) -> list[str] | None:
    """Names from ``classes.txt``: one per line, ``name`` or ``<id> <name>``; a line for ignore_index is dropped."""
    path = root / "classes.txt"
    if not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    numbered = [re.match(r"^(\d+)[\s:,]+(.+)$", line) for line in lines]
    if not lines or not all(numbered):
        return lines
    by_id = {int(m.group(1)): m.group(2).strip() for m in numbered}  # type: ignore[union-attr]
    by_id.pop(ignore_index, None)
    ids = sorted(by_id)
    if ids != list(range(len(ids))):
        raise ValueError(
            f"'{path}' numbers its classes {ids}; ids must run 0..K-1 (a line for ignore_index is allowed)."
        )
    return [by_id[i] for i in ids]


@register_datamodule
class SegmentationFolderDataModule(BaseDataModule):
    """Semantic segmentation from ``root/{train,val,test}/images/*`` + ``root/{split}/masks/*.png``.

    Masks are single-channel PNGs of class ids (same stem as their image). An optional ``root/classes.txt``
    gives one class name per line. Train batches are random scale/crop/flip/colour-jittered crops; val/test
    images are optionally resized by their short side and padded per batch (masks with ``ignore_index``).
    """

    def __init__(
        self,
        root: str,
        num_classes: int | None = None,
        ignore_index: int = 255,
        crop_size: int = 512,
        eval_size: int | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        color_jitter: float = 0.2,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        predict_dir: str | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        """Read the class names; the folders are scanned in ``setup``.

        Args:
            root: Dataset root with ``train``, ``val`` (and optionally ``test``) folders, each holding
                ``images/`` and ``masks/``.
            num_classes: Number of classes; defaults to the number of lines in ``root/classes.txt``.
            ignore_index: Mask value of void pixels, left out of loss and metrics.
            crop_size: Side of the square training crops.
            eval_size: Short side that val/test/predict images are resized to; ``None`` keeps their size.
            scale_range: Range of the random rescale factor applied before cropping in training.
            color_jitter: Brightness/contrast/saturation jitter of training crops (hue a quarter of it); 0 = off.
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (0 loads in the main process).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
            predict_dir: Folder of images to run ``predict`` on.
            class_names: Class names, used when there is no ``root/classes.txt``; defaults to ``class_<i>``.
        """
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.root = Path(root)
        self.ignore_index = ignore_index
        self.crop_size = crop_size
        self.eval_size = eval_size
        self.scale_range = scale_range
        self.color_jitter = color_jitter
        self.predict_dir = predict_dir
        self.num_classes, self.class_names = self._resolve_classes(num_classes, class_names)
        if 0 <= ignore_index < self.num_classes:
            raise ValueError(
                f"ignore_index={ignore_index} is also a class id (num_classes={self.num_classes}). "
                "Use a value outside [0, num_classes), e.g. 255."
            )

    def _resolve_classes(self, num_classes: int | None, class_names: list[str] | None) -> tuple[int, list[str]]:
        file_names = _read_class_names(self.root, self.ignore_index)
        names = file_names if file_names is not None else class_names
        if num_classes is None:
            if names is None:
                hint = "" if self.root.is_dir() else f" (the root '{self.root}' does not exist either)"
                raise ValueError(
                    f"num_classes is not set and '{self.root / 'classes.txt'}' was not found{hint}. Set "
                    "data.init_args.num_classes, or add classes.txt with one class name per line."
                )
            num_classes = len(names)
        if names is not None and len(names) != num_classes:
            source = f"'{self.root / 'classes.txt'}'" if file_names is not None else "class_names"
            raise ValueError(
                f"{source} lists {len(names)} classes but num_classes={num_classes}. "
                "Make them agree (or leave num_classes unset to take it from the names)."
            )
        return num_classes, list(names) if names is not None else [f"class_{i}" for i in range(num_classes)]

    def _make_dataset(self, split: Split) -> Dataset:
        if split == "predict":
            if self.predict_dir is None:
                raise ValueError(
                    "predict needs a folder of images: set data.init_args.predict_dir (--data.predict_dir)."
                )
            return PredictImageFolder(self.predict_dir, segmentation_eval_transform(self.eval_size))
        if split == "train":
            transform = segmentation_train_transform(
                self.crop_size, self.ignore_index, self.scale_range, self.color_jitter
            )
        else:
            transform = segmentation_eval_transform(self.eval_size)
        return self._labelled_dataset(split, transform)

    def _labelled_dataset(self, split: Split, transform: Callable[..., dict[str, Any]]) -> Dataset:
        """The dataset of a split with masks; DataModules of other folder layouts override this."""
        return SegmentationFolderDataset(self.root, split, self.num_classes, self.ignore_index, transform)

    def class_pixel_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class, its pixels and those of the images it appears in, over the training masks (one pass)."""
        return self.dataset("train").class_pixel_counts()  # type: ignore[attr-defined]

    def get_collate_fn(self, split: Split) -> Callable[[list[Any]], Any]:
        """Pad each batch to its largest image (masks padded with ``ignore_index``)."""
        return partial(pad_collate, ignore_index=self.ignore_index)


SHAPE_CLASSES = ["background", "circle", "rectangle", "triangle"]
_MAX_OVERLAP = 0.1
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "predict": 1}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background: base colour + linear gradient + sinusoidal stripes + noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle, stripe_angle = rng.uniform(0, 2 * np.pi, size=2)
    gradient = np.cos(angle) * xx + np.sin(angle) * yy
    stripes = np.sin(2 * np.pi * rng.uniform(2, 6) * (np.cos(stripe_angle) * xx + np.sin(stripe_angle) * yy))
    image = (
        rng.uniform(40, 215, size=3)
        + rng.uniform(-40, 40, size=3) * gradient[..., None]
        + rng.uniform(0, 20, size=3) * stripes[..., None]
        + rng.normal(0, 6, size=(size, size, 3))
    )
    return np.clip(image, 0, 255)


def _shape_mask(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """A filled circle (1), rectangle (2) or triangle (3) with radius/half-side 15-40% of the image."""
    canvas = np.zeros((size, size), np.uint8)
    radius = rng.uniform(0.15, 0.4) * size
    cx, cy = rng.uniform(radius * 0.5, size - radius * 0.5, size=2)
    if cls == 1:
        cv2.circle(canvas, (round(cx), round(cy)), round(radius), 1, thickness=-1)
    elif cls == 2:
        # sizes scaled so the three classes cover similar areas on average
        half, aspect = 0.9 * radius, rng.uniform(0.6, 1.0)
        hw, hh = (half, half * aspect) if rng.random() < 0.5 else (half * aspect, half)
        cv2.rectangle(canvas, (round(cx - hw), round(cy - hh)), (round(cx + hw), round(cy + hh)), 1, thickness=-1)
    else:
        # pointing up or down (with some jitter): free rotation makes triangles much slower to learn
        start = -np.pi / 2 + rng.choice([0.0, np.pi])
        angles = start + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.2, 0.2, size=3)
        points = 1.5 * radius * np.stack([np.cos(angles), np.sin(angles)], axis=1) + (cx, cy)
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    return canvas.astype(bool)


def _distinct_color(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """Of a few random colours, the one farthest from (the 5th percentile of) the pixels it will cover."""
    pixels = region[:: max(1, len(region) // 256)]
    candidates = rng.uniform(0, 255, size=(16, 3))
    distances = np.linalg.norm(pixels[None] - candidates[:, None], axis=-1)
    return candidates[np.argmax(np.percentile(distances, 5, axis=1))]


def render_shapes(rng: np.random.Generator, size: int, max_shapes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Draw 1 to ``max_shapes`` flat-coloured shapes on a textured background.

    Later shapes paint over earlier ones in both image and mask, but a new shape may cover at most
    ``_MAX_OVERLAP`` of its area with earlier ones (heavy occlusion makes the quickstart slow to learn).
    Colours are random (not tied to the class), each chosen to stand out from what it covers, so the class must
    be told from the shape.

    Args:
        rng: Random generator; the same state gives the same sample.
        size: Image side in pixels.
        max_shapes: Most shapes per image.

    Returns:
        ``(size, size, 3)`` uint8 RGB image and ``(size, size)`` uint8 mask of ``SHAPE_CLASSES`` indices.
    """
    image = _background(rng, size)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, max_shapes + 1)):
        for _attempt in range(10):
            cls = int(rng.integers(1, len(SHAPE_CLASSES)))
            shape = _shape_mask(rng, cls, size)
            if shape.any() and np.count_nonzero(shape & (mask > 0)) <= _MAX_OVERLAP * np.count_nonzero(shape):
                break
        else:
            continue
        image[shape] = _distinct_color(rng, image[shape])
        mask[shape] = cls
    return np.round(image).astype(np.uint8), mask


class SyntheticShapesDataset(Dataset):
    """Random shapes on textured backgrounds, generated on first access (and kept, for sets up to 256 MiB); item
    ``i`` of a split is always the same."""

    def __init__(
        self,
        length: int,
        split: str,
        seed: int = 0,
        image_size: int = 64,
        max_shapes: int = 3,
        transform: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        """Set up the generator.

        Args:
            length: Number of items.
            split: Split name; each split draws different images.
            seed: Base seed; the same seed gives the same images.
            image_size: Image side in pixels.
            max_shapes: Most shapes per image.
            transform: Albumentations pipeline; defaults to ``segmentation_eval_transform()``.
        """
        self.length = length
        self.split = split
        self.seed = seed
        self.image_size = image_size
        self.max_shapes = max_shapes
        self.transform = transform or segmentation_eval_transform()
        self.cache = SampleCache(length, image_size**2 * 4)

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image and mask of item ``index`` before the transform."""
        rng = np.random.default_rng([self.seed, _SPLIT_IDS.get(self.split, zlib.crc32(self.split.encode())), index])
        return render_shapes(rng, self.image_size, self.max_shapes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        image, mask = self.cache.get(index, self.render)
        out = _apply(self.transform, image, mask)
        size = (self.image_size, self.image_size)
        return {
            "image": out["image"],
            "mask": out["mask"],
            "path": f"synthetic/{self.split}/{index:06d}",
            "orig_size": size,
            "valid_size": size,
        }


@register_datamodule
class SyntheticSegmentationDataModule(SyntheticDataModule):
    """Circles, rectangles and triangles on textured backgrounds, made in code: runs offline, trains in minutes.

    Classes: ``background``, ``circle``, ``rectangle``, ``triangle``. Shapes have random flat colours and may
    overlap. Training applies random flips; val/test/predict are unaugmented (predict reuses the val images).
    """

    def __init__(
        self,
        num_train: int = 1024,
        num_val: int = 64,
        num_test: int = 64,
        image_size: int = 64,
        max_shapes: int = 3,
        seed: int = 0,
        ignore_index: int = 255,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        """Configure the generator.

        Args:
            num_train: Training images.
            num_val: Validation images (also used for predict).
            num_test: Test images.
            image_size: Image side in pixels.
            max_shapes: Most shapes per image.
            seed: Base seed; splits differ from each other and repeat across runs.
            ignore_index: Mask value of padded pixels (the generator itself never writes it).
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (0 loads in the main process).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
        """
        super().__init__(num_train, num_val, num_test, image_size, seed, batch_size, num_workers, pin_memory)
        self.max_shapes = max_shapes
        self.ignore_index = ignore_index
        self.num_classes = len(SHAPE_CLASSES)
        self.class_names = list(SHAPE_CLASSES)

    def _make_dataset(self, split: Split) -> Dataset:
        transform = A.Compose([*random_flips(), *to_tensor()]) if split == "train" else segmentation_eval_transform()
        return SyntheticShapesDataset(
            self.split_length(split), split, self.seed, self.image_size, self.max_shapes, transform
        )

    def get_collate_fn(self, split: Split) -> Callable[[list[Any]], Any]:
        """Stack the batch (all images share one size, so nothing is padded)."""
        return partial(pad_collate, ignore_index=self.ignore_index, size_divisor=1)
