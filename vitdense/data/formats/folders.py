"""Files of folder datasets: image and mask extensions, listing a folder, pairing images with masks by file stem,
and the images of a folder for prediction."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from vitdense.data.formats.io import load_image
from vitdense.data.transforms import apply_transform, segmentation_eval_transform

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".npy")  # .npy: rasters (data.bands)
MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp")


def list_files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """The files directly inside ``folder`` whose suffix (in any case) is one of ``extensions``, sorted."""
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


def check_split_folder(root: Path, split: str, folders: tuple[str, ...], layout: str) -> Path:
    """``root/split``, after checking that it and its ``folders`` exist (errors describe the ``layout``)."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"data.root: the dataset root '{root}' does not exist. Point data.root at a folder of the layout {layout}."
        )
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"Split folder '{split_dir}' not found (folders in root: {found or 'none'}). Expected the layout {layout}."
        )
    for name in folders:
        if not (split_dir / name).is_dir():
            raise FileNotFoundError(f"Folder '{split_dir / name}' not found. Expected the layout {layout}.")
    return split_dir


def examples(names: list[str], limit: int = 5) -> str:
    """The first ``limit`` names joined by commas, ending in ``...`` when there are more (for error messages)."""
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def pair_by_key(
    images: dict[str, Path], masks: dict[str, Path], image_dir: Path, mask_dir: Path, rule: str = "with the same stem"
) -> list[tuple[Path, Path]]:
    """Pair images and masks that share a key, sorted by key; raise when either side has files left unpaired."""
    no_mask = sorted(images[k].name for k in images.keys() - masks.keys())
    if no_mask:
        raise ValueError(
            f"{len(no_mask)} image(s) in '{image_dir}' have no mask {rule} in '{mask_dir}' "
            f"(e.g. {examples(no_mask)}). Add the masks or remove those images."
        )
    no_image = sorted(masks[k].name for k in masks.keys() - images.keys())
    if no_image:
        raise ValueError(
            f"{len(no_image)} mask(s) in '{mask_dir}' have no image {rule} in '{image_dir}' "
            f"(e.g. {examples(no_image)}). Add the images or remove those masks."
        )
    return [(images[key], masks[key]) for key in sorted(images)]


def pair_folders(image_dir: Path, mask_dir: Path) -> list[tuple[Path, Path]]:
    """Pair the images of ``image_dir`` with the masks of ``mask_dir`` by file stem."""
    images = _by_stem(list_files(image_dir, IMAGE_EXTENSIONS), image_dir)
    if not images:
        raise ValueError(f"No images found in '{image_dir}' (looked for {', '.join(IMAGE_EXTENSIONS)}).")
    masks = _by_stem(list_files(mask_dir, MASK_EXTENSIONS), mask_dir)
    return pair_by_key(images, masks, image_dir, mask_dir)


def list_images(folder: str | Path) -> list[Path]:
    """Return the image files directly inside ``folder``, sorted (extensions: png jpg jpeg bmp tif tiff webp).

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: ``folder`` holds no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder '{folder}' does not exist.")
    files = list_files(folder, IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"No images found in '{folder}' (looked for {', '.join(IMAGE_EXTENSIONS)}).")
    return files


class PredictImageFolder(Dataset):
    """The images directly inside a folder, for prediction (no masks).

    Items are ``dict(image=(3, H, W) float in [0, 1], path=str, name=str, orig_size=(h, w), valid_size=(h, w))``;
    ``name`` is the stem for a file's outputs, the file name with its extension where stems collide (``a.jpg``,
    ``a.png`` -> ``a.jpg``, ``a.png``), so that no prediction overwrites another.
    """

    def __init__(
        self,
        folder: str | Path,
        transform: Callable[..., dict[str, Any]] | None = None,
        bands: list[int] | None = None,
        nodata: float | None = None,
    ) -> None:
        """List the images of ``folder``.

        Args:
            folder: Folder of images (not searched recursively).
            transform: Albumentations pipeline; defaults to ``segmentation_eval_transform()``.
            bands: Read rasters with these bands (0-based), as float32 (see ``data.formats.raster.load_raster``).
            nodata: Value of pixels without data in the rasters; default each file's own.
        """
        self.bands, self.nodata = bands, nodata
        self.files = list_images(folder)
        stems = [p.stem for p in self.files]
        self.names = [p.name if stems.count(p.stem) > 1 else p.stem for p in self.files]
        self.transform = transform or segmentation_eval_transform()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.bands is None:
            image = load_image(self.files[index])
        else:
            from vitdense.data.formats.raster import load_raster

            image = load_raster(self.files[index], self.bands, self.nodata)
        out = apply_transform(self.transform, image)
        return {
            "image": out["image"],
            "path": str(self.files[index]),
            "name": self.names[index],
            "orig_size": tuple(image.shape[:2]),
            "valid_size": tuple(out["image"].shape[-2:]),
        }
