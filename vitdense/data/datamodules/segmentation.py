"""Semantic segmentation from a folder: ``SegmentationFolderDataModule`` (layouts, class table, one-folder split).

It composes a reader (``data.formats.masks``: mask files, colour masks, COCO / LabelMe / CVAT polygons), the split
(``vitdense.data.splits``) and ``SegmentationFolderDataset`` (``vitdense.data.datasets.segmentation``); the synthetic
shapes DataModule is in ``vitdense.data.datamodules.synthetic``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import Dataset

from vitdense.data.datamodules.base import BaseDataModule, SegmentationInputs, Split
from vitdense.data.datasets.segmentation import SegmentationFolderDataset, check_split_folder
from vitdense.data.formats.camvid import camvid_lists
from vitdense.data.formats.class_table import ClassSpec, ClassTable, ColorLookup, drop_void_classes, find_class_table
from vitdense.data.formats.folders import PredictImageFolder
from vitdense.data.formats.io import image_size
from vitdense.data.formats.masks import (
    AnnotationFormat,
    MaskReader,
    MaskType,
    PolygonOptions,
    export_splits,
    labelme_dir,
    make_reader,
    native_class_table,
)
from vitdense.data.formats.voc import voc_folder, voc_split_lists
from vitdense.data.formats.yolo import find_yaml
from vitdense.data.recipe_rules import AUTO, scale_range_rule
from vitdense.data.registry import register_datamodule
from vitdense.data.splits import SavedSplit, choose_split, export_subsets
from vitdense.data.transforms import (
    crop_exceeds_images,
    pad_collate,
    segmentation_eval_transform,
    segmentation_train_transform,
)


@register_datamodule
class SegmentationFolderDataModule(SegmentationInputs, SavedSplit, BaseDataModule):
    """Semantic segmentation from a folder: ``root/{train,val,test}/images/*`` + annotations per split, or one
    ``root/images`` + annotations split by a seeded, class-stratified split (or by split list files).

    Annotations (``annotations: auto`` finds which): ``masks/`` of class ids or of class colours (through a class
    table: ``classes.txt`` lines ``<id> <name> <r,g,b>``, CVAT's ``labelmap.txt`` or ``classes``), COCO
    ``annotations.json``, LabelMe JSON per image (``annotations/`` or beside the images) or CVAT for images
    ``annotations.xml``. Train batches are random scale/crop/flip/colour-jittered crops; val/test images are
    optionally resized by their short side and padded per batch (masks with ``ignore_index``). A one-folder split is
    saved with the run (list files in the run folder, and in its checkpoints), and evaluating from a checkpoint uses it.
    """

    # RGB colour of each class when the data defines them (a colour-mask class table), linked into the task for
    # predicted masks; None: vitdense's palette. Only segmentation DataModules have it (the CLI link needs a source).
    class_colors: list[tuple[int, int, int]] | None = None

    def __init__(
        self,
        root: str,
        num_classes: int | None = None,
        ignore_index: int = 255,
        crop_size: int = 512,
        eval_size: int | None = None,
        scale_range: tuple[float, float] | Literal["auto"] = (0.5, 2.0),
        color_jitter: float = 0.2,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        predict_dir: str | None = None,
        class_names: list[str] | None = None,
        classes: list[ClassSpec] | None = None,
        class_table: str | None = None,
        void_classes: list[str] | None = None,
        unknown_colors: Literal["error", "ignore"] = "error",
        mask_type: MaskType = "auto",
        annotations: AnnotationFormat = "auto",
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        seed: int = 0,
        split_dir: str | None = None,
        polygons: PolygonOptions | None = None,
        bands: list[int] | None = None,
        nodata: float | None = None,
    ) -> None:
        """Read the class table; the folders are scanned in ``setup``.

        Args:
            root: Dataset root: ``train``, ``val`` (and optionally ``test``) folders, each holding ``images/`` and
                annotations, or one ``images/`` folder and its annotations (split by ``val_fraction`` and ``seed``).
            num_classes: Number of classes; defaults to the number of classes of the class table.
            ignore_index: Mask value of void pixels, left out of loss and metrics.
            crop_size: Side of the square training crops.
            eval_size: Short side that val/test/predict images are resized to; ``None`` keeps their size.
            scale_range: Range of the random rescale factor applied before cropping in training; ``auto``: from
                ``crop_size / median short side`` of the training images (clamped to [0.5, 1]) up to 2, printed when
                fitting (``vitdense.data.recipe_rules.scale_range_rule``).
            color_jitter: Brightness/contrast/saturation jitter of training crops (hue a quarter of it); 0 = off.
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (0 loads in the main process).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
            predict_dir: Folder of images to run ``predict`` on.
            class_names: Class names, used when there is no class table; defaults to ``class_<i>``.
            classes: The class table in the config, in id order: ``[{name: road, color: [128, 64, 128]}, ...]``
                (instead of ``root/classes.txt`` or ``root/labelmap.txt``).
            class_table: A class table file instead of the one found at ``root``: labelme's ``labels.txt``
                (``__ignore__``, ``_background_``, then the classes, read as labelme2voc.py reads it), CVAT's
                ``labelmap.txt`` or a ``classes.txt``.
            void_classes: Names of class-table entries that mark void pixels (mapped to ``ignore_index``).
            unknown_colors: A mask colour in no class entry: ``error`` (naming file, colour and pixels) or ``ignore``.
            mask_type: ``auto``: RGB masks are colours, single-channel masks class ids; ``ids``; ``colors`` (palette
                masks through their palette's colours too).
            annotations: ``masks``, ``coco`` (annotations.json), ``labelme`` (JSON per image), ``cvat``
                (annotations.xml, CVAT for images 1.1), ``label_studio`` (Label Studio's JSON export: a .json list
                of tasks), ``yolo`` (a YOLO / Ultralytics data.yaml with its splits; class 0 ``background`` is added
                and YOLO class k is class k + 1), ``camvid`` (SegNet's CamVid layout: train.txt / val.txt / test.txt
                of ``/train/x.png /trainannot/x.png`` lines, the splits), or ``auto`` (found from the files).
            val_fraction: Share of a one-folder dataset put into val.
            test_fraction: Share of a one-folder dataset put into test.
            seed: Seed of the one-folder split.
            split_dir: Folder of split lists (``train.txt``, ``val.txt``, ``test.txt``, one image stem per line, as
                VOC's ImageSets) splitting a one-folder dataset, instead of the seeded split.
            polygons: How polygon annotations are drawn (background class, COCO category matching, line width).
            bands: Read images as multi-band rasters (GeoTIFF/TIFF, ``.npy``) with these bands, 0-based, in the
                order the model takes them; the backbone gets ``in_chans = len(bands)`` and per-band mean/std from
                the training images (computed once when fitting, saved with the run). Colour jitter, which assumes
                RGB, is off. ``None``: images are read as 8-bit RGB.
            nodata: Value of pixels without data in the rasters (default each file's own): void in masks, zero after
                normalisation in images.
        """
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.root = Path(root)
        self.ignore_index = ignore_index
        self.crop_size = crop_size
        self.eval_size = eval_size
        self.scale_range = scale_range
        self.color_jitter = color_jitter
        self.predict_dir = predict_dir
        self.classes, self.void_classes = classes, list(void_classes or [])
        self.class_table = Path(class_table) if class_table else None
        self.unknown_colors, self.mask_type, self.annotations = unknown_colors, mask_type, annotations
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.split_dir = Path(split_dir) if split_dir else None
        self.polygons: PolygonOptions = dict(polygons or {})  # type: ignore[assignment]
        if bands is not None and (not bands or min(bands) < 0 or len(set(bands)) != len(bands)):
            raise ValueError(f"data.bands: {bands} must be distinct 0-based band positions, e.g. [0, 1, 2, 3].")
        self.bands, self.nodata = (list(bands) if bands is not None else None), nodata
        self.table: ClassTable | None = None
        self.num_classes, self.class_names = self._resolve_classes(num_classes, class_names)
        if 0 <= ignore_index < self.num_classes:
            raise ValueError(
                f"ignore_index={ignore_index} is also a class id (num_classes={self.num_classes}). "
                "Use a value outside [0, num_classes), e.g. 255."
            )
        self.split: dict[str, list[str]] | None = None  # the one-folder split in use
        self.saved_split: dict[str, list[str]] | None = None  # from a checkpoint
        self.all_samples: dict[str, list[tuple[Path, Any]]] | None = None
        # Set to a list by the data report: problems of single samples are collected there instead of raised.
        self.problems: list[str] | None = None

    def _resolve_classes(self, num_classes: int | None, class_names: list[str] | None) -> tuple[int, list[str]]:
        self.table = find_class_table(self.root, self.ignore_index, self.classes, self._native_table, self.class_table)
        if self.table is not None:
            self.table = drop_void_classes(self.table, self.void_classes)
        elif self.void_classes:
            raise ValueError(f"void_classes {self.void_classes} names classes, but no class table was found.")
        self.class_colors = self.table.colors if self.table is not None else None
        names = self.table.names if self.table is not None else class_names
        if num_classes is None:
            if names is None and not self.root.is_dir():  # the root is the problem, not the classes it would name
                check_split_folder(self.root, "train", ())
            if names is None:
                raise ValueError(
                    f"num_classes is not set and '{self.root / 'classes.txt'}' was not found. Set "
                    "data.init_args.num_classes, or add classes.txt with one class name per line."
                )
            num_classes = len(names)
        if names is not None and len(names) != num_classes:
            source = self.table.source if self.table is not None else "class_names"
            raise ValueError(
                f"{source} lists {len(names)} classes but num_classes={num_classes}. "
                "Make them agree (or leave num_classes unset to take it from the names)."
            )
        return num_classes, list(names) if names is not None else [f"class_{i}" for i in range(num_classes)]

    def _native_table(self) -> ClassTable | None:
        """The classes an annotation file states itself (COCO categories, CVAT labels), if any."""
        return native_class_table(self._base_folder(), self.annotations, self.ignore_index)

    def band_statistics(self) -> tuple[list[float], list[float]] | None:
        """Per-band mean and std over the training images' pixels with data (streamed), or None for RGB images,
        which keep their backbone's pretraining normalisation."""
        if self.bands is None:
            return None
        from vitdense.data.formats.raster import band_statistics

        paths = [image for image, _ in self.dataset("train").samples]  # type: ignore[attr-defined]
        return band_statistics(paths, self.bands, self.nodata)

    @property
    def one_folder(self) -> bool:
        """Whether the data is one folder to split (``root/images`` or a Pascal VOC layout, no ``root/train``), or
        a YOLO or CamVid export (its data.yaml or list files name the splits)."""
        if self.annotations in ("auto", "yolo") and find_yaml(self.root) is not None:
            return True
        if self.annotations in ("auto", "camvid") and camvid_lists(self.root):  # train/ + trainannot/ + train.txt
            return True
        if (self.root / "train").is_dir():
            return False
        return (self.root / "images").is_dir() or self.voc is not None or labelme_dir(self.root) == self.root

    @property
    def voc(self) -> Path | None:
        """The folder of a Pascal VOC layout at ``root`` (``JPEGImages/`` + ``SegmentationClass/``), if it is one."""
        return voc_folder(self.root) if self.annotations in ("auto", "voc") else None

    def _base_folder(self, split: str = "train") -> Path:
        return self.root if self.one_folder else self.root / split

    def reader(self, base: Path, subsets: tuple[str, ...] | None = None) -> MaskReader:
        """The reader of the annotations of the folder ``base`` (``root`` or ``root/<split>``); ``subsets``: only
        those subsets of the export (a split of a CVAT project)."""
        lookup = None
        if self.table is not None and self.table.colors is not None:
            lookup = ColorLookup(self.table, self.ignore_index, self.unknown_colors)
        return make_reader(base, self.annotations, self.class_names, self.ignore_index, lookup, self.mask_type,
                           self.polygons, tuple(self.void_classes), subsets)  # fmt: skip

    def export_split(self, split: str) -> tuple[str, ...] | None:
        """The subsets of a one-folder export that make ``split`` when the export names its splits (a CVAT
        project's subsets), else None (the one-folder split applies)."""
        if not hasattr(self, "_export_splits"):
            self._export_splits = export_splits(self.root, self.annotations)
        return export_subsets(split, self._export_splits, self.root)

    def _make_dataset(self, split: Split) -> Dataset:
        if split == "predict":
            if self.predict_dir is None:
                raise ValueError(
                    "predict needs a folder of images: set data.init_args.predict_dir (--data.predict_dir)."
                )
            return PredictImageFolder(self.predict_dir, segmentation_eval_transform(self.eval_size), self.bands,
                                      self.nodata)  # fmt: skip
        if split == "train":
            jitter = self.color_jitter if self.bands is None else 0.0
            if jitter != self.color_jitter and self.color_jitter > 0:
                rank_zero_info("[vitdense] colour jitter is off for multi-band rasters (it assumes RGB)")
            if self.scale_range == AUTO:
                dataset = self._labelled_dataset(split, None)
                dataset.transform = segmentation_train_transform(  # type: ignore[attr-defined]
                    self.crop_size, self.ignore_index, self._auto_scale_range(dataset), jitter
                )
                return dataset
            assert not isinstance(self.scale_range, str)  # auto was handled above: chosen from the training images
            transform = segmentation_train_transform(self.crop_size, self.ignore_index, self.scale_range, jitter)
        else:
            transform = segmentation_eval_transform(self.eval_size)
        return self._labelled_dataset(split, transform)

    def _auto_scale_range(self, dataset: Any) -> tuple[float, float]:
        """``scale_range: auto`` resolved from the training images' sizes (their headers only), and printed."""
        sides = [min(size) for size in self._image_sizes(dataset)]
        choice = scale_range_rule(sides, self.crop_size)
        rank_zero_info(f"[vitdense] data.scale_range: auto -> {list(choice.value)} ({choice.reason})")
        return choice.value

    @staticmethod
    def _image_sizes(dataset: Any) -> list[tuple[int, int]]:
        """``(width, height)`` of each image of a dataset (headers only; those its scan read are not read again)."""
        known = getattr(dataset, "image_sizes", {})
        return [known.get(path) or image_size(path) for path, _ in dataset.samples]

    def warn_if_crop_exceeds_images(self) -> None:
        """Warn when ``crop_size`` is larger than every training image: each crop is then mostly padding, which costs
        compute (FLOPs grow with the crop's area, or faster) spent on padding."""
        message = crop_exceeds_images(self.crop_size, self._image_sizes(self.dataset("train")), f"'{self.root}'")
        if message:
            rank_zero_warn(message)

    def _labelled_dataset(self, split: Split, transform: Callable[..., dict[str, Any]] | None) -> Dataset:
        """The dataset of a split with masks; DataModules of other folder layouts override this."""
        args = (self.root, split, self.num_classes, self.ignore_index, transform)
        bands: dict[str, Any] = {"bands": self.bands, "nodata": self.nodata}
        if self.one_folder and self.export_split(split) is not None:  # the export's own splits
            return SegmentationFolderDataset(*args, reader=self.reader(self.root, self.export_split(split)),
                                             check_sizes=self.problems is None, **bands)  # fmt: skip
        if self.one_folder:
            samples = self.samples_of(split)
            return SegmentationFolderDataset(*args, reader=self.reader(self.root), samples=samples,
                                             check_sizes=self.problems is None, **bands)  # fmt: skip
        base = check_split_folder(self.root, split, ("images",))
        return SegmentationFolderDataset(*args, reader=self.reader(base), check_sizes=self.problems is None, **bands)

    def split_samples(self) -> dict[str, list[tuple[Path, Any]]]:
        """The samples of each split of a one-folder dataset: the split of ``split_dir``, else the one saved with the
        run (restored from a checkpoint), else a seeded split stratified by class."""
        if self.all_samples is not None:
            return self.all_samples
        reader = self.reader(self.root)
        everything = SegmentationFolderDataset(self.root, "all", self.num_classes, self.ignore_index, reader=reader,
                                               check_sizes=self.problems is None)  # fmt: skip
        pairs = everything.samples

        def presence() -> list[set[int]]:
            return [self._classes_present(everything, key) for _, key in pairs]

        self.all_samples, self.split = choose_split(pairs, presence, self.root, self.val_fraction, self.test_fraction,
                                                    self.seed, self.split_dir, self.saved_split,
                                                    self._export_lists(pairs))  # fmt: skip
        return self.all_samples

    def _export_lists(self, pairs: list[tuple[Path, Any]]) -> tuple[dict[str, list[str]], str] | None:
        """The split lists the export holds itself (Pascal VOC's ``ImageSets/Segmentation``), said when used."""
        if self.voc is None or self.split_dir is not None or self.saved_split is not None:
            return None
        source = self.table.source if self.table is not None else "-"
        rank_zero_info(f"[vitdense] '{self.root}' is a Pascal VOC export (JPEGImages/, SegmentationClass/; also CVAT's "
                       "Segmentation mask 1.1): palette mask indices are class ids, 255 void, RGB mask colours map "
                       f"through the classes of {source}")  # fmt: skip
        lists = voc_split_lists(self.voc, pairs)
        return None if lists is None else (lists, str(self.voc / "ImageSets" / "Segmentation"))

    def _classes_present(self, dataset: SegmentationFolderDataset, key: Any) -> set[int]:
        try:
            return set(np.unique(dataset.load_mask(key)).tolist()) - {self.ignore_index}
        except ValueError as err:
            if self.problems is None:
                raise
            self.problems.append(str(err))
            return set()

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of ``stage``; when fitting a one-folder dataset, write its split into the run folder."""
        super().setup(stage)
        if stage == "fit":
            self.warn_if_crop_exceeds_images()
            sizes = ", ".join(f"{s} {len(self.datasets[s])}" for s in ("train", "val"))
            source = self.table.source if self.table is not None else "data.num_classes / class_names"
            rank_zero_info(f"[vitdense] data '{self.root}': {sizes} images, {self.num_classes} classes from {source} "
                           "(`vitdense data --config ...` reports pixels per class and every problem)")  # fmt: skip
        self.write_split(stage)

    def class_pixel_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class, its pixels and those of the images it appears in, over the training masks (one pass)."""
        return self.dataset("train").class_pixel_counts()  # type: ignore[attr-defined]

    def class_object_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class, the training masks holding it and those where it is one solid object (the same one pass)."""
        return self.dataset("train").class_object_counts()  # type: ignore[attr-defined]

    def get_collate_fn(self, split: Split) -> Callable[[list[Any]], Any]:
        """Pad each batch to its largest image (masks padded with ``ignore_index``)."""
        return partial(pad_collate, ignore_index=self.ignore_index)
