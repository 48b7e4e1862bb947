"""Data larger than one disk: segmentation datasets as LitData chunks, streamed from a local folder or an object store.

``write_stream`` converts the splits of any vitdense segmentation DataModule (folders, colour masks, polygons, one
folder with a saved split, multi-band rasters) into LitData chunks: per sample the image as read (uint8 RGB, or the
raster's bands as float32 with NaN where there is no data), the class-id mask (every label format already resolved)
and its index and path, plus ``vitdense_stream.json`` (classes, colours, bands, ignore index). ``vitdense stream
--config X --output DIR`` runs it on a config's DataModule.

``StreamingSegmentationDataModule`` trains from such a folder or URL (``s3://``, ``gs://``, ... as LitData reads
them). LitData shares the chunks among processes and DataLoader workers: under DDP each sample is read by one process
per epoch (training drops the last ``world_size x batch - 1`` samples at most so that every process runs the same
number of steps, other ones each epoch as the order is shuffled; val and test read every sample exactly once), and
Lightning keeps the loader's position in checkpoints, so a fit resumed mid-epoch continues that epoch where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from vitdense.data.datamodules.base import BaseDataModule, SegmentationInputs, Split
from vitdense.data.registry import register_datamodule
from vitdense.data.transforms import (
    apply_transform,
    pad_collate,
    segmentation_eval_transform,
    segmentation_train_transform,
)

METADATA = "vitdense_stream.json"


def _litdata() -> Any:
    try:
        import litdata
    except ImportError as err:  # pragma: no cover - litdata is in the dev/stream extras
        raise ImportError("Streaming needs LitData: pip install 'vitdense[stream]' (or litdata).") from err
    return litdata


def write_stream(datamodule: Any, output_dir: str | Path, splits: tuple[str, ...] = ("train", "val", "test"),
                 chunk_bytes: str = "64MB") -> dict[str, int]:  # fmt: skip
    """Write the ``splits`` of a segmentation DataModule as LitData chunks under ``output_dir/<split>`` (a new or
    empty folder); splits the DataModule does not have are skipped and said so. Returns the samples per split."""
    from litdata.streaming import Cache

    output_dir = Path(output_dir)
    if not hasattr(datamodule, "_labelled_dataset"):  # sample lists of image/mask pairs: the folder DataModules
        raise ValueError(
            f"vitdense stream converts segmentation folder DataModules; {type(datamodule).__name__} is not one "
            "(nothing was written)."
        )
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"'{output_dir}' is not empty; choose a new folder for the stream (nothing was written).")
    counts: dict[str, int] = {}
    for split in splits:
        try:
            datamodule.setup({"train": "fit", "val": "validate", "test": "test"}[split])
            dataset = datamodule.dataset(split)
        except (FileNotFoundError, ValueError) as err:
            if split == "train":
                raise
            print(f"[vitdense] no {split} split to stream ({err})", flush=True)
            continue
        cache = Cache(input_dir=str(output_dir / split), chunk_bytes=chunk_bytes)
        for index, (image_path, _) in enumerate(dataset.samples):
            image, mask = dataset.load_pair(index)
            mask = mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.int32)
            cache[index] = {"index": index, "path": str(image_path), "image": image, "mask": mask}
        cache.done()
        cache.merge()
        counts[split] = len(dataset.samples)
    meta = {"num_classes": datamodule.num_classes, "class_names": list(datamodule.class_names),
            "class_colors": getattr(datamodule, "class_colors", None), "ignore_index": datamodule.ignore_index,
            "bands": getattr(datamodule, "bands", None), "samples": counts}  # fmt: skip
    (output_dir / METADATA).write_text(json.dumps(meta, indent=2, default=list))
    return counts


class _StreamingSegmentation:
    """A LitData ``StreamingDataset`` of one split whose items are decoded and transformed as folder items are."""

    def __new__(cls, input_dir: str, transform: Callable[..., dict[str, Any]], shuffle: bool, drop_last: bool,
                seed: int) -> Any:  # fmt: skip
        base: Any = _litdata().StreamingDataset  # LitData is an optional extra: imported here, its hint if missing

        class StreamingSegmentation(base):
            def __getitem__(self, index: Any) -> dict[str, Any]:
                record = super().__getitem__(index)
                image, mask = record["image"], record["mask"].astype(np.int64)
                out = apply_transform(transform, image, mask)
                return {"image": out["image"], "mask": out["mask"], "path": record["path"],
                        "index": int(record["index"]), "orig_size": tuple(image.shape[:2]),
                        "valid_size": tuple(out["image"].shape[-2:])}  # fmt: skip

        return StreamingSegmentation(input_dir, shuffle=shuffle, drop_last=drop_last, seed=seed)


@register_datamodule
class StreamingSegmentationDataModule(SegmentationInputs, BaseDataModule):
    """Semantic segmentation streamed from LitData chunks written by ``vitdense stream`` (``write_stream``): a local
    folder or an object-store URL holding ``train/``, ``val/`` (and ``test/``) and ``vitdense_stream.json``."""

    class_colors: list[tuple[int, int, int]] | None = None

    def __init__(
        self,
        root: str,
        crop_size: int = 512,
        eval_size: int | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        color_jitter: float = 0.2,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        metadata: str | None = None,
    ) -> None:
        """Read the stream's metadata (classes, bands); the splits are opened in ``setup``.

        Args:
            root: Folder or URL of the stream (``s3://bucket/prefix``, ...), as written by ``vitdense stream``.
            crop_size: Side of the square training crops.
            eval_size: Short side that val/test images are resized to; ``None`` keeps their size.
            scale_range: Range of the random rescale factor applied before cropping in training.
            color_jitter: Brightness/contrast/saturation jitter of training crops (off for multi-band streams).
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (LitData shares the chunks among them).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
            seed: Seed of the training order (shuffled anew every epoch).
            metadata: Local path of ``vitdense_stream.json`` when ``root`` is remote; default ``root``'s own.
        """
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.root, self.crop_size, self.eval_size = root.rstrip("/"), crop_size, eval_size
        self.scale_range, self.color_jitter, self.seed = scale_range, color_jitter, seed
        meta_path = Path(metadata) if metadata else Path(self.root) / METADATA
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"'{meta_path}' not found: root must be a stream written by `vitdense stream --config ... --output "
                "DIR` (for a remote root, give a local copy of its vitdense_stream.json as data.metadata)."
            )
        meta = json.loads(meta_path.read_text())
        self.num_classes, self.class_names = int(meta["num_classes"]), list(meta["class_names"])
        self.ignore_index, self.bands = int(meta["ignore_index"]), meta.get("bands")
        self.resume_state: dict[str, Any] | None = None  # a mid-epoch loader position from a checkpoint
        colors = meta.get("class_colors")
        self.class_colors = [tuple(c) for c in colors] if colors else None

    def _make_dataset(self, split: Split) -> Any:
        if split == "predict":
            raise ValueError("predict reads images from a folder: use SegmentationFolderDataModule's predict_dir.")
        if split == "train":
            jitter = self.color_jitter if self.bands is None else 0.0
            transform = segmentation_train_transform(self.crop_size, self.ignore_index, self.scale_range, jitter)
            return _StreamingSegmentation(f"{self.root}/train", transform, True, True, self.seed)
        return _StreamingSegmentation(f"{self.root}/{split}", segmentation_eval_transform(self.eval_size), False,
                                      False, self.seed)  # fmt: skip

    def _dataloader(self, split: Split) -> DataLoader:
        base: Any = _litdata().StreamingDataLoader
        datamodule = self

        class ResumableLoader(base):
            def __iter__(self) -> Any:
                # Runs when iteration really starts (a generator), after a checkpoint was restored: a fit resumed
                # mid-epoch takes the saved position and continues that epoch.
                if split == "train" and datamodule.resume_state is not None:
                    self.load_state_dict(datamodule.resume_state)
                    datamodule.resume_state = None
                yield from super().__iter__()

        loader = ResumableLoader(self.dataset(split), batch_size=self.batch_size, num_workers=self.num_workers,
                                 pin_memory=self.pin_memory, collate_fn=self.get_collate_fn(split))  # fmt: skip
        if split == "train":
            self.train_loader = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position when a checkpoint is taken mid-epoch (Lightning saves it with the
        checkpoint; at an epoch's end there is nothing to continue)."""
        loader = getattr(self, "train_loader", None)
        if loader is None:
            return {}
        state = loader.state_dict()
        done = state.get("num_samples_yielded", 0)
        return {"train_loader": state} if 0 < done < len(loader.dataset) else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep a saved mid-epoch position for the training loader's next iteration."""
        self.resume_state = state_dict.get("train_loader")

    def band_statistics(self) -> tuple[list[float], list[float]] | None:
        """Per-band mean and std over the streamed training pixels with data (one pass), or None for RGB streams."""
        if self.bands is None:
            return None
        from vitdense.data.formats.raster import BandMoments

        moments = BandMoments()
        for record in _litdata().StreamingDataset(f"{self.root}/train"):
            values = record["image"].reshape(-1, record["image"].shape[-1])
            moments.add(values[~np.isnan(values).any(1)])
        return moments.result()

    def get_collate_fn(self, split: Split) -> Callable[[list[Any]], Any]:
        """Pad each batch to its largest image (masks padded with ``ignore_index``)."""
        return partial(pad_collate, ignore_index=self.ignore_index)
