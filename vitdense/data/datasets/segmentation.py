"""``SegmentationFolderDataset``: the image/mask pairs of one split of a segmentation folder, read through a reader
(``vitdense.data.formats.masks``), checked and transformed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from vitdense.data.formats.folders import check_split_folder as check_folder
from vitdense.data.formats.folders import pair_folders
from vitdense.data.formats.io import image_size, load_image, load_mask
from vitdense.data.formats.masks import MaskReader
from vitdense.data.formats.raster import load_raster
from vitdense.data.regions import class_objects
from vitdense.data.transforms import apply_transform, segmentation_eval_transform

LAYOUT = "root/{split}/images/*.png (or .jpg, ...) + root/{split}/masks/*.png with the same file stems"


def check_split_folder(root: Path, split: str, folders: tuple[str, ...]) -> Path:
    """``root/split`` of a segmentation folder, checked (``folders.check_split_folder`` with this layout)."""
    return check_folder(root, split, folders, LAYOUT)


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
        reader: MaskReader | None = None,
        samples: list[tuple[Path, Any]] | None = None,
        check_sizes: bool = True,
        bands: list[int] | None = None,
        nodata: float | None = None,
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
            reader: Reads the annotations (mask files, colour masks, polygons); ``None``: class-id mask files.
            samples: The ``(image, annotation)`` pairs of the split (e.g. a saved split of one folder); ``None``
                lists them with the reader, or from ``root/{split}``.
            check_sizes: Check each annotation's size against its image's when scanning (the data report checks
                them itself, to list every problem).
            bands: Read images as rasters with these bands (0-based), as float32 in their own units (8-bit scaled to
                [0, 1]); pixels without data are NaN in the image and ``ignore_index`` in the mask. ``None``: 8-bit RGB.
            nodata: Value of pixels without data in the rasters; default each file's own.
        """
        self.root = Path(root)
        self.split = split
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.transform = transform or segmentation_eval_transform()
        self.label_map = label_map
        self.reader = reader
        self.given_samples = samples
        self.bands, self.nodata = bands, nodata
        self._mask_statistics: dict[str, np.ndarray] | None = None
        self.image_sizes: dict[Path, tuple[int, int]] = {}  # (width, height) of the images whose headers were read
        self.samples = self._scan() if check_sizes else self.find_pairs()

    def find_pairs(self) -> list[tuple[Path, Path]]:
        """Return the split's ``(image, mask)`` paths, sorted; subclasses override this to read other layouts."""
        if self.given_samples is not None:
            return self.given_samples
        if self.reader is not None:
            return self.reader.pairs()
        split_dir = check_split_folder(self.root, self.split, ("images", "masks"))
        image_dir, mask_dir = split_dir / "images", split_dir / "masks"
        return pair_folders(image_dir, mask_dir)

    def size_problems(self, samples: list[tuple[Path, Any]]) -> list[str]:
        """One line per annotation whose size differs from its image's."""
        mismatched = []
        for image_path, key in samples:
            isize, msize = self.image_size(image_path), self.annotation_size(key)
            if isize != msize:
                mismatched.append(
                    f"'{image_path}' is {isize[0]}x{isize[1]} but {self.describe(key)} is {msize[0]}x{msize[1]}"
                )
        return mismatched

    def image_size(self, path: Path) -> tuple[int, int]:
        """``(width, height)`` of an image of the split, its header read once."""
        if path not in self.image_sizes:
            self.image_sizes[path] = image_size(path)
        return self.image_sizes[path]

    def annotation_size(self, key: Any) -> tuple[int, int]:
        """``(width, height)`` of a sample's annotation."""
        return self.reader.size(key) if self.reader is not None else image_size(key)

    def describe(self, key: Any) -> str:
        """The annotation file (and entry) of a sample, for messages."""
        return self.reader.describe(key) if self.reader is not None else f"'{key}'"

    def load_mask(self, key: Any) -> np.ndarray:
        """The checked class-id mask of a sample's annotation."""
        mask = self.reader.read(key) if self.reader is not None else load_mask(key)
        if self.label_map is not None:
            mask = self._relabel(mask, key)
        self._check_mask(mask, key)
        return mask

    def load_image(self, path: Path) -> np.ndarray:
        """(H, W, 3) uint8 RGB, or with ``bands`` the raster's bands as float32 (NaN where there is no data)."""
        return load_image(path) if self.bands is None else load_raster(path, self.bands, self.nodata)

    def _scan(self) -> list[tuple[Path, Any]]:
        samples = self.find_pairs()
        mismatched = self.size_problems(samples)
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
        stats = self.mask_statistics(regions=False)
        return stats["pixels"], stats["image_pixels"]

    def class_object_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class: the masks of the split that hold it, and those where it is one solid object (one 8-connected
        region without holes): what ``inference.keep_largest: auto`` reads."""
        stats = self.mask_statistics()
        return stats["present"], stats["solid"]

    def mask_statistics(self, regions: bool = True) -> dict[str, np.ndarray]:
        """``class_pixel_counts`` and, with ``regions``, ``class_object_counts`` of the split, from one read of its
        masks (kept). Finding the regions is the costly part (milliseconds a mask), so pixels alone skip it."""
        cached = self._mask_statistics
        if cached is None or (regions and "solid" not in cached):
            k = self.num_classes
            names = ("pixels", "image_pixels", "present", "solid") if regions else ("pixels", "image_pixels")
            stats = {name: np.zeros(k, np.int64) for name in names}
            for _, key in self.samples:
                counts, solid = class_objects(self.load_mask(key), k, self.ignore_index, regions=regions)
                stats["pixels"] += counts
                stats["image_pixels"] += (counts > 0) * int(counts.sum())
                if regions:
                    stats["present"] += counts > 0
                    stats["solid"] += solid
            self._mask_statistics = cached = stats
        return cached

    def _check_mask(self, mask: np.ndarray, path: Any) -> None:
        if mask.min(initial=0) >= 0 and mask.max(initial=0) < self.num_classes:
            return
        bad = np.unique(mask[((mask < 0) | (mask >= self.num_classes)) & (mask != self.ignore_index)])
        if bad.size:
            values = ", ".join(str(v) for v in bad[:20]) + (", ..." if bad.size > 20 else "")
            raise ValueError(
                f"Mask {self.describe(path)} has values [{values}] outside [0, num_classes={self.num_classes}) that "
                f"are not ignore_index={self.ignore_index}. Set num_classes to cover every class id, or set "
                "ignore_index to the value used for void pixels."
            )

    def _relabel(self, mask: np.ndarray, path: Any) -> np.ndarray:
        size = len(self.label_map)  # type: ignore[arg-type]
        if mask.min(initial=0) < 0 or mask.max(initial=0) >= size:
            raise ValueError(
                f"Mask '{path}' has values outside [0, {size}), the ids this dataset's label mapping knows "
                f"(found {int(mask.min())}..{int(mask.max())}). Check the file is an official annotation."
            )
        return self.label_map[mask]  # type: ignore[index]

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as read, before any transform: its image and checked class-id mask (a raster's pixels
        without data in a band are void)."""
        image_path, key = self.samples[index]
        image, mask = self.load_image(image_path), self.load_mask(key)
        if image.dtype.kind == "f":
            mask = np.where(np.isnan(image).any(-1), self.ignore_index, mask)
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path = self.samples[index][0]
        image, mask = self.load_pair(index)
        out = apply_transform(self.transform, image, mask)
        return {
            "image": out["image"],
            "mask": out["mask"],
            "path": str(image_path),
            "orig_size": tuple(image.shape[:2]),
            "valid_size": tuple(out["image"].shape[-2:]),
        }
