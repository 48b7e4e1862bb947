"""Image classification from folders, one per class (torchvision's ImageFolder layout): the dataset, its DataModule
and the class names read from the folder names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from vitdense.data.datamodules.base import BaseDataModule, Split
from vitdense.data.formats.folders import IMAGE_EXTENSIONS, PredictImageFolder, check_split_folder, examples, list_files
from vitdense.data.formats.io import load_image
from vitdense.data.registry import register_datamodule
from vitdense.data.transforms import apply_transform, classification_eval_transform, classification_train_transform

LAYOUT = "root/{split}/<class name>/*.jpg (or .png, ...), one folder per class"


def _class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the (non-hidden) folders inside ``split_dir``."""
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split_dir(root: Path, split: str) -> Path:
    return check_split_folder(root, split, (), LAYOUT)


def read_class_names(root: str | Path) -> list[str]:
    """Return the sorted class folder names of the first split found among ``train``, ``val``, ``test``.

    Only the split folder is listed (no image is opened), so this is cheap enough to run in ``__init__``.

    Raises:
        FileNotFoundError: ``root`` or all three split folders are missing.
        ValueError: The split holds no class folders.
    """
    root = Path(root)
    split = next((s for s in ("train", "val", "test") if (root / s).is_dir()), "train")
    split_dir = _split_dir(root, split)
    names = _class_folders(split_dir)
    if not names:
        raise ValueError(
            f"No class folders found in '{split_dir}'. Put each class's images in its own folder: {LAYOUT}."
        )
    return names


class ImageFolderDataset(Dataset):
    """Images from ``root/{split}/<class>/*``, labelled by the index of their folder name in ``class_names``.

    The folder is validated when the dataset is built (no image is decoded then); an unreadable image raises
    a ``ValueError`` naming it when it is loaded. Items are ``dict(image=(3, H, W) float in [0, 1],
    label=int64 scalar tensor, path=str)``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        class_names: list[str],
        transform: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        """Scan and validate the split folder.

        Args:
            root: Dataset root holding one folder per split.
            split: Split folder name (``train``, ``val``, ``test``).
            class_names: Known classes (the training split's folder names); a split may lack some of them but
                may not hold others.
            transform: Albumentations pipeline; defaults to ``classification_eval_transform(224)``.
        """
        self.root = Path(root)
        self.split = split
        self.class_names = list(class_names)
        self.transform = transform or classification_eval_transform(224)
        self.samples = self._scan()

    def _scan(self) -> list[tuple[Path, int]]:
        split_dir = _split_dir(self.root, self.split)
        folders = _class_folders(split_dir)
        if not folders:
            raise ValueError(
                f"No class folders found in '{split_dir}'. Put each class's images in its own folder: {LAYOUT}."
            )
        unknown = [name for name in folders if name not in self.class_names]
        if unknown:
            raise ValueError(
                f"'{split_dir}' has class folder(s) {unknown} that are not among the {len(self.class_names)} "
                f"classes of the training split ({examples(self.class_names, 10)}). Rename or remove them, "
                "or add the same folders to the training split."
            )
        samples = []
        for name in folders:
            files = list_files(split_dir / name, IMAGE_EXTENSIONS)
            if not files:
                raise ValueError(
                    f"Class folder '{split_dir / name}' holds no images (looked for {', '.join(IMAGE_EXTENSIONS)}). "
                    "Add images or remove the folder."
                )
            label = self.class_names.index(name)
            samples += [(path, label) for path in files]
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        out = apply_transform(self.transform, load_image(path))
        return {"image": out["image"], "label": torch.tensor(label, dtype=torch.long), "path": str(path)}


class _PredictFolder(PredictImageFolder):
    """``PredictImageFolder`` items reduced to ``image`` and ``path`` (default collate stacks them)."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        return {"image": item["image"], "path": item["path"]}


@register_datamodule
class ImageFolderDataModule(BaseDataModule):
    """Image classification from ``root/{train,val,test}/<class name>/*`` (torchvision ImageFolder layout).

    Classes are the sorted folder names of the training split (of ``val``/``test`` when there is no ``train``),
    read when the DataModule is created. Training takes random resized crops with a horizontal flip (plus
    optional RandAugment); val/test/predict resize the short side to ``image_size / 0.875`` and centre-crop.
    Batches: ``{"image": (B, 3, S, S) float in [0, 1], "label": (B,) long, "path": [str, ...]}``.
    """

    def __init__(
        self,
        root: str,
        num_classes: int | None = None,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        predict_dir: str | None = None,
        randaugment: bool = False,
        train_scale: tuple[float, float] = (0.08, 1.0),
    ) -> None:
        """Read the class names from the split's folder names; the images are listed in ``setup``.

        Args:
            root: Dataset root with ``train``, ``val`` (and optionally ``test``) folders, each holding one folder
                of images per class.
            num_classes: Number of classes; must equal the number of class folders when given.
            image_size: Side of the square images the model sees.
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (0 loads in the main process).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
            predict_dir: Folder of images to run ``predict`` on.
            randaugment: Apply torchvision's RandAugment (2 ops, magnitude 9) to training crops.
            train_scale: Range of a training crop's area as a fraction of the image's.
        """
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.root = Path(root)
        self.image_size = image_size
        self.predict_dir = predict_dir
        self.randaugment = randaugment
        self.train_scale = train_scale
        self.class_names = read_class_names(self.root)
        if num_classes is not None and num_classes != len(self.class_names):
            raise ValueError(
                f"num_classes={num_classes} but '{self.root}' has {len(self.class_names)} class folders "
                f"({examples(self.class_names, 10)}). Set num_classes to {len(self.class_names)} or leave it "
                "unset to take it from the folders."
            )
        self.num_classes = len(self.class_names)

    @property
    def input_size(self) -> int:
        return self.image_size

    def _make_dataset(self, split: Split) -> Dataset:
        eval_transform = classification_eval_transform(self.image_size)
        if split == "predict":
            if self.predict_dir is None:
                raise ValueError(
                    "predict needs a folder of images: set data.init_args.predict_dir (--data.predict_dir)."
                )
            return _PredictFolder(self.predict_dir, eval_transform)
        if split == "train":
            transform = classification_train_transform(self.image_size, self.train_scale, self.randaugment)
        else:
            transform = eval_transform
        return ImageFolderDataset(self.root, split, self.class_names, transform)
