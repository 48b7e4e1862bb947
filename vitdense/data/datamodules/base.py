"""``BaseDataModule``: stage -> datasets -> DataLoaders, shared by every vitdense DataModule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import lightning.pytorch as pl
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

Split = Literal["train", "val", "test", "predict"]

_STAGE_SPLITS: dict[str | None, tuple[Split, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("predict",),
    None: ("train", "val"),
}


class SampleCache:
    """Rendered synthetic samples kept in memory, so that an epoch after the first costs only its augmentation.

    Synthetic items are a pure function of their index; sets larger than ``max_bytes`` (estimated from
    ``bytes_per_item``) are rendered on every access instead. Each DataLoader worker holds its own cache.
    """

    def __init__(self, length: int, bytes_per_item: int, max_bytes: int = 256 * 2**20) -> None:
        self.items: dict[int, Any] | None = {} if length * bytes_per_item <= max_bytes else None

    def get(self, index: int, render: Callable[[int], Any]) -> Any:
        """The sample of ``index``, rendered by ``render(index)`` on first use."""
        if self.items is None:
            return render(index)
        if index not in self.items:
            self.items[index] = render(index)
        return self.items[index]


class UnrepeatedDistributedSampler(DistributedSampler):
    """Process ``r`` of ``n`` takes items ``r, r + n, ...``: every item exactly once over all processes.

    PyTorch's DistributedSampler (what Lightning adds for val/test) repeats items so that every process gets as
    many; those repeats would be counted twice in split-wide metrics. Processes may get one item more or less.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(self.rank, len(dataset), self.num_replicas))  # type: ignore[arg-type]
        self.total_size = len(dataset)  # type: ignore[arg-type]

    def __iter__(self):
        return iter(range(self.rank, self.total_size, self.num_replicas))


def _distributed_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class BaseDataModule(pl.LightningDataModule):
    """Builds datasets per stage and wraps them in DataLoaders.

    Subclasses set ``num_classes`` and ``class_names`` in ``__init__`` (the CLI links them into the model before
    ``setup`` runs) and implement ``_make_dataset``; they may override ``get_collate_fn`` and ``input_size``.
    """

    num_classes: int
    class_names: list[str]

    def __init__(self, batch_size: int = 8, num_workers: int = 0, pin_memory: bool = False) -> None:
        """Store the DataLoader settings.

        Args:
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (0 loads in the main process).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
        """
        super().__init__()
        # Checked here, where the keys are known: torch's DataLoader would say it at the run's start, naming no key.
        if batch_size < 1:
            raise ValueError(f"data.batch_size is {batch_size}; it must be >= 1 (samples per batch, per device).")
        if num_workers < 0:
            raise ValueError(
                f"data.num_workers is {num_workers}; it must be >= 0 (0 loads in the main process, n starts n workers)."
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.datasets: dict[str, Dataset] = {}

    @property
    def input_size(self) -> int | None:
        """Side of the square images the model trains on (the training crop), or ``None`` when it varies.

        The CLI links it into the task's ``img_size``, so the size is stated once, on the data.
        """
        return None

    def _make_dataset(self, split: Split) -> Dataset:
        """Build the dataset of one split."""
        raise NotImplementedError

    def get_collate_fn(self, split: Split) -> Callable[[list[Any]], Any] | None:
        """Return the collate function of a split's DataLoader (``None`` = PyTorch's default)."""
        return None

    def dataset(self, split: Split) -> Dataset:
        """Return the dataset of ``split``, building it on first use."""
        if split not in self.datasets:
            self.datasets[split] = self._make_dataset(split)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets that ``stage`` needs (fit: train+val, validate: val, test: test, predict: predict)."""
        for split in _STAGE_SPLITS[stage]:
            self.dataset(split)

    def _dataloader(self, split: Split) -> DataLoader:
        dataset = self.dataset(split)
        train = split == "train"
        sampler = None
        if not train and len(dataset) >= _distributed_world_size() > 1:  # type: ignore[arg-type]
            sampler = UnrepeatedDistributedSampler(dataset)  # Lightning keeps a DistributedSampler it is given
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            sampler=sampler,
            # dropping the last batch of a set smaller than one batch would leave nothing to train on
            drop_last=train and len(dataset) > self.batch_size,  # type: ignore[arg-type]
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.get_collate_fn(split),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self._dataloader("train")

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in order."""
        return self._dataloader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches, in order."""
        return self._dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        """Prediction batches, in order."""
        return self._dataloader("predict")


class SegmentationInputs:
    """What a segmentation DataModule links into its task besides the classes: the training crop (``img_size``) and
    the band count (``in_chans``: ``len(bands)``, or 3 for RGB images). Listed before ``BaseDataModule``."""

    crop_size: int
    bands: list[int] | None = None

    @property
    def input_size(self) -> int:
        return self.crop_size

    @property
    def in_chans(self) -> int:
        """Input bands of the model (linked into the task's backbone)."""
        return len(self.bands) if self.bands is not None else 3


class SyntheticDataModule(BaseDataModule):
    """Shared settings of the generated-in-code DataModules: split sizes, image size and seed.

    Predict reuses the val images, so ``predict`` runs without a folder.
    """

    def __init__(
        self,
        num_train: int = 512,
        num_val: int = 64,
        num_test: int = 64,
        image_size: int = 64,
        seed: int = 0,
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
            seed: Base seed; splits differ from each other and repeat across runs.
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (0 loads in the main process).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
        """
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.image_size = image_size
        self.seed = seed

    @property
    def input_size(self) -> int:
        return self.image_size

    def split_length(self, split: Split) -> int:
        """Number of generated items of ``split``."""
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test, "predict": self.num_val}[split]
