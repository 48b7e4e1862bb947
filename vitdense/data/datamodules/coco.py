"""Object detection and instance segmentation DataModules: COCO JSON, LabelMe JSON or CVAT for images XML, per split
folder or one folder split by a seeded, class-stratified split.

Each format becomes the same per-image records (``CocoRecord``: boxes ``xyxy``, labels, masks): COCO through
``coco_format``, LabelMe and CVAT through ``objects``; ``DetectionDataset`` (``detection_dataset``) turns records into
items. Batches are lists of images (see ``vitdense.data.transforms.detection_collate``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset

from vitdense.data.datamodules.base import BaseDataModule, Split
from vitdense.data.datasets.detection import CocoDetectionDataset, DetectionDataset
from vitdense.data.formats.coco import LAYOUT, coco_export, match_image_ids, read_categories
from vitdense.data.formats.folders import PredictImageFolder
from vitdense.data.formats.masks import labelme_dir
from vitdense.data.formats.objects import ObjectFormat, export_splits, format_of, found_labels, locate, read_objects
from vitdense.data.formats.polygons import check_unannotated
from vitdense.data.formats.yolo import find_yaml
from vitdense.data.recipe_rules import AUTO, DETECTION_SCALE_RANGE, box_scale_rule
from vitdense.data.registry import register_datamodule
from vitdense.data.splits import SavedSplit, choose_split, export_subsets
from vitdense.data.transforms import detection_collate, detection_eval_transform, detection_train_transform

__all__ = ["CocoDetectionDataModule", "CocoDetectionDataset", "CocoInstanceDataModule", "DetectionDataset"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
FORMATS = "annotations.json (COCO), annotations.xml (CVAT for images 1.1) or LabelMe .json files"


@register_datamodule
class CocoDetectionDataModule(SavedSplit, BaseDataModule):
    """Object detection from your labels: ``root/{split}/images/`` + the split's annotations, or one ``root/images/`` +
    its annotations (no split folders) split by ``val_fraction`` / ``test_fraction`` / ``seed``.

    Annotations (``annotations: auto`` finds which): COCO ``annotations.json``, CVAT for images 1.1
    ``annotations.xml`` (boxes, polygons, masks) or LabelMe JSON per image in ``annotations/`` or beside the images
    (rectangles, polygons, circles); see ``data.formats.objects`` for how shapes become boxes and masks. Any split's
    image folder or annotations may be given explicitly instead (``train_images``, ``val_annotations``, ...).
    Labels are ``0..K-1``: COCO categories in order of sorted id (of the training JSON, read in ``__init__``), CVAT's
    labels in file order, LabelMe's in sorted order, or ``class_names``. Training resizes the long side to a random
    ``scale_range`` multiple of ``image_size``, pads or randomly crops to a square and flips; val/test/predict only
    resize the long side to ``image_size``. A one-folder split is stratified by the classes of each image's boxes and
    saved with the run (list files in the run folder, and in its checkpoints); evaluating from a checkpoint uses it.
    See ``CocoDetectionDataset`` for the COCO box policy. Batches are lists (see ``detection_collate``).
    """

    MASKS = False  # CocoInstanceDataModule reads the segmentations too

    def __init__(
        self,
        root: str | None = None,
        train_images: str | None = None,
        train_annotations: str | None = None,
        val_images: str | None = None,
        val_annotations: str | None = None,
        test_images: str | None = None,
        test_annotations: str | None = None,
        image_size: int = 512,
        scale_range: tuple[float, float] | Literal["auto"] = DETECTION_SCALE_RANGE,
        min_box_size: float = 1.0,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        predict_dir: str | None = None,
        annotations: ObjectFormat = "auto",
        class_names: list[str] | None = None,
        void_classes: list[str] | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        seed: int = 0,
        split_dir: str | None = None,
    ) -> None:
        """Read the classes of the annotations; the splits are scanned in ``setup``.

        Args:
            root: Dataset root with ``train``, ``val`` (and optionally ``test``) folders, each holding ``images/``
                and annotations; or one ``images/`` folder and its annotations, split by ``val_fraction`` and ``seed``.
            train_images: Training image folder (overrides ``root/train/images``).
            train_annotations: Training annotations (overrides ``root/train/annotations.json``): a COCO JSON, a CVAT
                XML or a folder of LabelMe JSON.
            val_images: Validation image folder (overrides ``root/val/images``).
            val_annotations: Validation annotations (overrides ``root/val/annotations.json``).
            test_images: Test image folder (overrides ``root/test/images``).
            test_annotations: Test annotations (overrides ``root/test/annotations.json``).
            image_size: Side of the square training images, and long side of val/test/predict images.
            scale_range: Range of the random long-side scale, relative to ``image_size``, in training; ``auto``:
                none ([1, 1]) when each class's objects keep about one size in the training boxes, else
                (0.5, 1.5); chosen and printed when fitting (``vitdense.data.recipe_rules.box_scale_rule``).
            min_box_size: Boxes narrower or lower than this many pixels after a transform are dropped.
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (0 loads in the main process).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
            predict_dir: Folder of images to run ``predict`` on.
            annotations: ``coco`` (annotations.json), ``labelme`` (JSON per image), ``cvat`` (annotations.xml, CVAT
                for images 1.1), ``label_studio`` (Label Studio's JSON export), ``yolo`` (a YOLO / Ultralytics
                data.yaml: its names and train / val / test splits; YOLO class k is label k), or ``auto`` (found
                from the files).
            class_names: Classes of LabelMe / CVAT labels, in label order (a shape of another label is an error);
                default: CVAT's labels, or every label of the LabelMe files, sorted. COCO files name their own.
            void_classes: LabelMe / CVAT labels whose shapes are skipped (as LabelMe's ``__ignore__``).
            val_fraction: Share of a one-folder dataset put into val.
            test_fraction: Share of a one-folder dataset put into test.
            seed: Seed of the one-folder split.
            split_dir: Folder of split lists (``train.txt``, ``val.txt``, ``test.txt``, one image stem per line)
                splitting a one-folder dataset, instead of the seeded split.
        """
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.root = None if root is None else Path(root)  # type: ignore[assignment]  # None: explicit split paths
        self.annotations, self.void_classes = annotations, list(void_classes or [])
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.split_dir = Path(split_dir) if split_dir else None
        self.split: dict[str, list[str]] | None = None  # the one-folder split in use
        self.saved_split: dict[str, list[str]] | None = None  # from a checkpoint
        self.all_samples: dict[str, list[tuple[Path, Any]]] | None = None
        explicit = {
            "train": (train_images, train_annotations),
            "val": (val_images, val_annotations),
            "test": (test_images, test_annotations),
        }
        if self.root is not None and not self.root.is_dir():
            raise FileNotFoundError(
                f"data.root: the dataset root '{self.root}' does not exist. Point data.root at a folder with the "
                f"layout {LAYOUT}."
            )
        self.one_folder = (
            self.root is not None
            and not (self.root / "train").is_dir()
            and ((self.root / "images").is_dir() or labelme_dir(self.root) == self.root)
        ) or (self.root is not None and annotations in ("auto", "yolo") and find_yaml(self.root) is not None)
        if self.one_folder and any(v for pair in explicit.values() for v in pair):
            raise ValueError(
                f"'{self.root}' is one folder (images/, no train/), split by val_fraction and seed; the *_images / "
                "*_annotations paths do not apply to it. Leave them unset, or point root at split folders."
            )
        export = None
        given = any(v for pair in explicit.values() for v in pair)
        if self.root is not None and annotations in ("auto", "coco") and not given:
            export = coco_export(self.root)
        if export is not None and len(export) > 1:  # the export's subsets are the splits
            self.one_folder = False
            explicit = {s: (str(export[s][0]), str(export[s][1])) if s in export else (None, None) for s in SPLITS}
        self.paths = {split: self._resolve(split, *explicit[split]) for split in SPLITS}
        if export is not None and len(export) == 1:  # one subset (CVAT's default): split by seed
            self.one_folder = True
            self.paths = {split: (*export["train"], "coco") for split in SPLITS}
        if export is not None:
            files = ", ".join(f"{split} = {path.name}" for split, (_, path) in export.items())
            rank_zero_info(f"[vitdense] '{self.root}' is a COCO export (annotations/instances_<subset>.json, images "
                           f"by file_name under images/<subset>/): {files}")  # fmt: skip
        self.image_size = image_size
        self.scale_range = scale_range
        self.min_box_size = min_box_size
        self.predict_dir = predict_dir
        self.categories = self._read_categories({s: explicit[s][1] is not None for s in SPLITS}, class_names)
        self.num_classes = len(self.categories)
        self.class_names = list(self.categories.values())

    def _resolve(self, split: str, images: str | None, annotations: str | None) -> tuple[Path | None, Path | None, str]:
        """``(image folder, annotations, format)`` of a split."""
        if annotations is not None:
            path = Path(annotations)
            fmt = format_of(path, self.annotations)
        elif self.root is not None:
            fmt, path = locate(self.root if self.one_folder else self.root / split, self.annotations)
        else:
            path, fmt = None, "coco" if self.annotations == "auto" else self.annotations
        if images is None and self.root is not None:
            base = self.root if self.one_folder else self.root / split
            images = str(base if fmt == "labelme" and path == base else base / "images")  # labelme: JSON beside image
        return (Path(images) if images else None, path, fmt)

    def _read_categories(self, explicit: dict[str, bool], class_names: list[str] | None) -> dict[int, str]:
        """``{category id: name}``: the categories of the first split's COCO JSON among train, val, test; else
        ``class_names`` or the labels the LabelMe / CVAT annotations name (ids 1..K)."""
        for split in SPLITS:
            path = self.paths[split][1]
            if path is not None and explicit[split] and not path.exists():
                raise FileNotFoundError(f"{split}_annotations file '{path}' not found. Check the path.")
        found = [(fmt, p) for _, p, fmt in self.paths.values() if p is not None and p.exists()]
        if not found:
            looked = [str(p) for _, p, _ in self.paths.values() if p is not None]
            what = "COCO annotation file" if all(f == "coco" for _, _, f in self.paths.values()) else "annotations"
            raise FileNotFoundError(
                f"No {what} found to read the categories from (looked for {looked or 'none'}). Set root (layout "
                f"{LAYOUT}; or {FORMATS} per split, or one root/images/ with its annotations) or train_annotations."
            )
        fmt, path = found[0]
        if fmt == "coco":
            if class_names is not None:
                raise ValueError(
                    f"class_names is set, but the COCO file '{path}' names its classes (categories); leave "
                    "data.class_names unset."
                )
            return read_categories(path)
        names, source = class_names, "data.class_names"
        if names is None and fmt in ("cvat", "yolo"):
            names, source = found_labels(fmt, path, tuple(self.void_classes)), f"the labels of '{path}'"
        elif names is None:  # every LabelMe folder of the dataset, so that a label only in val is a class too
            folders = sorted({p for f, p in found if f == fmt})
            names = sorted({n for folder in folders for n in found_labels(fmt, folder, tuple(self.void_classes))})
            files = "the LabelMe files in " if fmt == "labelme" else ""
            source = f"the labels of {files}{', '.join(repr(str(f)) for f in folders)}"
        if class_names is None:
            rank_zero_info(f"[vitdense] {len(names)} classes from {source}: {names} (data.class_names sets them)")
        if not names:
            raise ValueError(f"No classes: {source} name none. Set data.class_names.")
        return {i + 1: name for i, name in enumerate(names)}

    @property
    def input_size(self) -> int:
        return self.image_size

    def _make_dataset(self, split: Split) -> Dataset:
        if split == "predict":
            if self.predict_dir is None:
                raise ValueError(
                    "predict needs a folder of images: set data.init_args.predict_dir (--data.predict_dir)."
                )
            return PredictImageFolder(self.predict_dir, detection_eval_transform(self.image_size, None))
        if split == "train" and self.scale_range == AUTO:
            dataset = self._make_dataset_with(split, None)
            scale = self._auto_scale_range(dataset)
            dataset.transform = detection_train_transform(self.image_size, scale, self.min_box_size)
            return dataset
        if split == "train":
            assert not isinstance(self.scale_range, str)  # auto was handled above: chosen from the training boxes
            transform = detection_train_transform(self.image_size, self.scale_range, self.min_box_size)
        else:
            transform = detection_eval_transform(self.image_size, self.min_box_size)
        return self._make_dataset_with(split, transform)

    def _make_dataset_with(self, split: Split, transform: Callable[..., dict[str, Any]] | None) -> DetectionDataset:
        """The labelled dataset of ``split`` with ``transform`` (``None``: the eval default, replaced by the caller)."""
        images, annotations, fmt = self.paths[split]
        if self.one_folder and self.export_split(split) is not None:  # a CVAT project's subsets are its splits
            records = read_objects(fmt, images, annotations, self.class_names, tuple(self.void_classes),  # type: ignore[arg-type]
                                   self.MASKS, self.export_split(split))  # fmt: skip
            return DetectionDataset(records, annotations, transform, self.MASKS)  # type: ignore[arg-type]
        if self.one_folder:
            assert annotations is not None  # a one-folder dataset was found by its annotation file
            chosen = self.samples_of(split)
            return DetectionDataset([record for _, record in chosen], annotations, transform, self.MASKS)
        if images is None or annotations is None:
            raise ValueError(
                f"The {split} split has no {'images folder' if images is None else 'annotations'}: set root "
                f"(layout {LAYOUT}) or data.init_args.{split}_images and {split}_annotations."
            )
        if not annotations.exists():
            raise FileNotFoundError(
                f"The {split} split's annotations '{annotations}' do not exist: its folder needs {FORMATS} (layout "
                f"{LAYOUT}), or set data.init_args.{split}_annotations."
            )
        return self._dataset(images, annotations, fmt, transform)

    def training_box_sides(self) -> np.ndarray:
        """Per training box, ``sqrt(width * height)`` in pixels at the training input size (its image's long side at
        ``image_size``): what ``head.anchor_scale: auto`` reads."""
        sides, _ = _box_sizes(self.dataset("train").records)  # type: ignore[attr-defined]
        return sides * self.image_size

    def _auto_scale_range(self, dataset: DetectionDataset) -> tuple[float, float]:
        """``scale_range: auto`` resolved from the training boxes (``box_scale_rule``), and printed."""
        sides, labels = _box_sizes(dataset.records)
        choice = box_scale_rule(sides, labels, self.class_names)
        rank_zero_info(f"[vitdense] data.scale_range: auto -> {list(choice.value)} ({choice.reason})")
        return choice.value

    def _dataset(
        self, images: Path, annotations: Path, fmt: str, transform: Callable[..., dict[str, Any]] | None
    ) -> DetectionDataset:
        if fmt == "coco":
            return CocoDetectionDataset(images, annotations, self.categories, transform, masks=self.MASKS)
        records = read_objects(fmt, images, annotations, self.class_names, tuple(self.void_classes), self.MASKS)
        return DetectionDataset(records, annotations, transform, self.MASKS)

    def export_split(self, split: str) -> tuple[str, ...] | None:
        """The subsets of a one-folder export that make ``split`` when the export names its splits (a CVAT
        project's subsets), else None (the one-folder split applies)."""
        if not hasattr(self, "_export_splits"):
            _, annotations, fmt = self.paths["train"]
            self._export_splits = export_splits(fmt, annotations)
        return export_subsets(split, self._export_splits, self.root)

    def split_samples(self) -> dict[str, list[tuple[Path, Any]]]:
        """The ``(image, record)`` samples of each split of a one-folder dataset: the split of ``split_dir``, else the
        one saved with the run (restored from a checkpoint), else a seeded split stratified by the boxes' classes."""
        if self.all_samples is None:
            images, annotations, fmt = self.paths["train"]
            everything = self._dataset(images, annotations, fmt, None)  # type: ignore[arg-type]
            if fmt == "coco":  # an image the JSON does not list would be in no split
                check_unannotated(images, {r.path for r in everything.records}, f"'{annotations}'")  # type: ignore[arg-type]
            pairs = sorted(((r.path, r) for r in everything.records), key=lambda pair: pair[0])
            self.all_samples, self.split = choose_split(
                pairs, lambda: [set(r.labels.tolist()) for _, r in pairs], self.root, self.val_fraction,
                self.test_fraction, self.seed, self.split_dir, self.saved_split,
            )  # fmt: skip
        return self.all_samples

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of ``stage``; when fitting a one-folder dataset, write its split into the run folder."""
        super().setup(stage)
        self.write_split(stage)

    def get_collate_fn(self, split: Split) -> Callable[[list[Any]], Any]:
        """Collect items in lists (images keep their own sizes)."""
        return detection_collate

    def coco_ids(self, names: list[str]) -> tuple[list[tuple[int, str]], dict[str, int] | None]:
        """For COCO results of predictions on images ``names``: each label's ``(category id, name)``, and the image
        ids of the first split (train, val, test) whose COCO file lists all of them (else ``None``)."""
        files = [p for _, p, fmt in self.paths.values() if fmt == "coco" and p is not None and p.is_file()]
        return list(self.categories.items()), match_image_ids(names, files)


def _box_sizes(records: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per box of ``records``: ``sqrt(width * height)`` over its image's long side, and its label."""
    sides, labels = [], []
    for record in records:
        wh = record.boxes[:, 2:] - record.boxes[:, :2]
        sides.append(np.sqrt(np.clip(wh, 0, None).prod(1)) / max(record.width, record.height))
        labels.append(record.labels)
    if not sides:
        return np.zeros(0), np.zeros(0, np.int64)
    return np.concatenate(sides), np.concatenate(labels)


@register_datamodule
class CocoInstanceDataModule(CocoDetectionDataModule):
    """Instance segmentation from COCO JSON, in the detection layout: each annotation's ``segmentation`` (polygons
    or RLE, as COCO writes them) becomes a mask that follows its box through every transform (and is dropped with
    it). Targets hold ``boxes``, ``labels`` and ``masks``. A segmentation outside its image, of another size, empty,
    or far from its bbox is an error naming the annotation.
    """

    MASKS = True


@register_datamodule
class COCO2017DataModule(CocoDetectionDataModule):
    """COCO 2017 detection in its official layout: ``root/{train2017,val2017}/*.jpg`` +
    ``root/annotations/instances_{train2017,val2017}.json``. ``test`` evaluates on val2017 (test-dev has no
    public labels). The 80 categories and their names come from the annotation files.
    """

    def __init__(
        self, root: str, image_size: int = 1024, scale_range: tuple[float, float] = (0.1, 2.0), **kwargs: Any
    ) -> None:
        """Point the COCO reader at the official files; every other argument is ``CocoDetectionDataModule``'s.

        Args:
            root: Folder holding ``train2017/``, ``val2017/`` and ``annotations/``.
            image_size: Side of the square training images (ViTDet: 1024), and long side of val/test images.
            scale_range: Range of the random long-side scale in training (ViTDet's large-scale jitter: 0.1-2.0).
        """
        base = Path(root)
        layout = "root/{train2017,val2017}/*.jpg + root/annotations/instances_{train2017,val2017}.json"
        for folder in (base / "val2017", base / "annotations"):
            if not folder.is_dir():
                raise FileNotFoundError(f"Folder '{folder}' not found. Expected the official layout {layout}.")
        ann = base / "annotations"
        train, val = ann / "instances_train2017.json", ann / "instances_val2017.json"
        super().__init__(
            train_images=str(base / "train2017"), train_annotations=str(train),
            val_images=str(base / "val2017"), val_annotations=str(val),
            test_images=str(base / "val2017"), test_annotations=str(val),
            image_size=image_size, scale_range=scale_range, **kwargs,
        )  # fmt: skip


@register_datamodule
class COCO2017InstanceDataModule(COCO2017DataModule):
    """COCO 2017 instance segmentation: ``COCO2017DataModule`` with each annotation's mask (polygons or RLE) too."""

    MASKS = True
