"""Splitting one folder of samples into train/val/test: a seeded split stratified by class, and split list files.

A split is a dict ``{"train": [stems], "val": [...], "test": [...]}`` of image file stems. List files hold one stem
per line (``train.txt``, ``val.txt``, ``test.txt``), as Pascal VOC's ``ImageSets/Segmentation``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from vitdense.data.formats.folders import IMAGE_EXTENSIONS, examples

SPLITS = ("train", "val", "test")


def stratified_split(
    stems: Sequence[str], presence: Sequence[set[int]], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """A seeded split of ``stems`` whose val (and test) holds every class where it can.

    Classes are visited from the rarest up: a class in at least 2 images gets one of them into val (3 images: one
    into test too, when there is a test split), picking an image whose other classes keep an image for training
    where there is one. Val and test are then filled at random up to their fractions, again sparing the last
    training image of a class. The same stems, classes and seed give the same split.

    Args:
        stems: Image stems, one per sample.
        presence: Classes present in each sample's mask.
        val_fraction: Share of the samples in val.
        test_fraction: Share of the samples in test.
        seed: Seed of the random choices.
    """
    n = len(stems)
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must each lie in [0, 1) and leave "
            "images for training (sum < 1)."
        )
    targets = {s: max(1, round(f * n)) if f > 0 else 0 for s, f in (("val", val_fraction), ("test", test_fraction))}
    if targets["val"] + targets["test"] >= n:
        raise ValueError(
            f"{n} image(s) cannot be split into val {targets['val']} + test {targets['test']} and leave any for "
            "training; add images or lower val_fraction / test_fraction."
        )
    order = np.random.default_rng(seed).permutation(n).tolist()
    assigned: dict[int, str] = {}
    classes = sorted({c for p in presence for c in p})
    remaining = {c: sum(c in p for p in presence) for c in classes}  # unassigned images holding each class
    counts = dict(remaining)

    def spares_train(i: int) -> bool:
        return all(remaining[c] > 1 for c in presence[i])

    def assign(i: int, split: str) -> None:
        assigned[i] = split
        for c in presence[i]:
            remaining[c] -= 1

    for split, min_images in (("val", 2), ("test", 3)):
        if targets[split] == 0:
            continue
        for c in sorted(classes, key=lambda c: (counts[c], c)):
            if counts[c] < min_images or any(s == split and c in presence[i] for i, s in assigned.items()):
                continue
            candidates = [i for i in order if i not in assigned and c in presence[i]]
            if candidates:
                assign(next((i for i in candidates if spares_train(i)), candidates[0]), split)
        size = sum(s == split for s in assigned.values())
        for sparing in (True, False):
            for i in order:
                if size >= targets[split]:
                    break
                if i not in assigned and (spares_train(i) or not sparing):
                    assign(i, split)
                    size += 1
    split_of = [assigned.get(i, "train") for i in range(n)]
    return {s: sorted(stem for stem, t in zip(stems, split_of) if t == s) for s in SPLITS}


def _stem(entry: str) -> str:
    return entry[: -len(Path(entry).suffix)] if Path(entry).suffix.lower() in IMAGE_EXTENSIONS else entry


def read_split_lists(folder: Path) -> dict[str, list[str]]:
    """``train.txt``, ``val.txt`` (and ``test.txt``) of ``folder``: the first word of each line, an image stem."""
    if not folder.is_dir():
        raise FileNotFoundError(f"Split list folder '{folder}' does not exist; it should hold train.txt and val.txt.")
    split: dict[str, list[str]] = {}
    for name in SPLITS:
        path = folder / f"{name}.txt"
        if path.is_file():
            split[name] = [_stem(line.split()[0]) for line in path.read_text().splitlines() if line.strip()]
    if "train" not in split:
        found = sorted(p.name for p in folder.glob("*.txt"))
        raise FileNotFoundError(
            f"'{folder / 'train.txt'}' not found (lists there: {found or 'none'}); a split folder holds train.txt, "
            "val.txt and optionally test.txt, one image stem per line."
        )
    return split


def write_split_lists(split: dict[str, list[str]], folder: Path) -> Path:
    """Write ``<split>.txt`` files (one stem per line) into ``folder``; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, stems in split.items():
        (folder / f"{name}.txt").write_text("".join(f"{s}\n" for s in stems))
    return folder


def apply_split(
    pairs: list[tuple[Path, Any]], split: dict[str, list[str]], source: str
) -> tuple[dict[str, list[tuple[Path, Any]]], list[str]]:
    """The samples of each split, and the stems of ``pairs`` that no list names.

    Raises:
        ValueError: A stem is listed in two splits, twice in one, or names no image of the folder.
    """
    by_stem = {image.stem: (image, key) for image, key in pairs}
    seen: dict[str, str] = {}
    for name, stems in split.items():
        for stem in stems:
            if stem in seen:
                where = "twice in" if seen[stem] == name else f"in both {seen[stem]} and"
                raise ValueError(f"Image '{stem}' is listed {where} {name} of the split {source}; list it once.")
            seen[stem] = name
        unknown = [s for s in stems if s not in by_stem]
        if unknown:
            raise ValueError(
                f"{len(unknown)} image(s) of the {name} list of the split {source} are not in the folder "
                f"(e.g. {examples(unknown)}). Restore them, or remove them from the list."
            )
    left_out = sorted(by_stem.keys() - seen.keys())
    return {name: [by_stem[s] for s in stems] for name, stems in split.items()}, left_out


def choose_split(
    pairs: list[tuple[Path, Any]],
    presence: Callable[[], Sequence[set[int]]],
    root: Path,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    split_dir: Path | None = None,
    saved: dict[str, list[str]] | None = None,
    export_lists: tuple[dict[str, list[str]], str] | None = None,
) -> tuple[dict[str, list[tuple[Path, Any]]], dict[str, list[str]]]:
    """The samples of each split of the one-folder dataset ``root`` and the split's stems: the lists of ``split_dir``,
    else the split saved with the run (from a checkpoint), else the export's own lists (``(lists, where)``, e.g.
    VOC's ImageSets), else a seeded split stratified by the classes that ``presence()`` gives per sample (called
    only then). Lists without ``val`` get a seeded, stratified val drawn from their ``train`` list."""
    stems = [image.stem for image, _ in pairs]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ValueError(
            f"{len(twice)} image stem(s) of '{root}' name two images (e.g. {examples(twice)}); a split lists images "
            "by stem, so rename one of each."
        )
    if split_dir is not None:
        split, source = read_split_lists(split_dir), f"lists in '{split_dir}'"
    elif saved is not None:
        split, source = saved, "saved with the run (checkpoint)"
    elif export_lists is not None:
        split, source = dict(export_lists[0]), f"lists in '{export_lists[1]}'"
    else:
        split = stratified_split(stems, presence(), val_fraction, test_fraction, seed)
        source = f"seed {seed}, val_fraction {val_fraction}, test_fraction {test_fraction}"
    if "val" not in split and saved is None:
        split, source = _val_from_train(split, stems, presence, val_fraction, seed, source)
    samples, left_out = apply_split(pairs, split, source)
    if left_out:
        rank_zero_warn(f"[vitdense] {len(left_out)} image(s) of '{root}' are in no split of the split {source} and "
                       f"are left out (e.g. {examples(left_out)}).")  # fmt: skip
    sizes = ", ".join(f"{name} {len(v)}" for name, v in samples.items())
    rank_zero_info(f"[vitdense] split of '{root}' ({source}): {sizes}")
    stems_of = {name: [image.stem for image, _ in chosen] for name, chosen in samples.items()}
    return {name: samples.get(name, []) for name in SPLITS}, stems_of


def _val_from_train(
    split: dict[str, list[str]],
    stems: list[str],
    presence: Callable[[], Sequence[set[int]]],
    val_fraction: float,
    seed: int,
    source: str,
) -> tuple[dict[str, list[str]], str]:
    """Lists without ``val.txt``: val is a seeded split (stratified by class) of the train list, and said so."""
    train = split["train"]
    if val_fraction <= 0:
        raise ValueError(f"The split {source} has no val list and val_fraction is {val_fraction}: add val.txt, or set "
                         "data.init_args.val_fraction above 0 to draw val from the train list.")  # fmt: skip
    if len(train) < 2:  # read (vitdense data, --write) without a val split; fit says the split is empty
        rank_zero_warn(f"[vitdense] the split {source} has no val list, and its train list has {len(train)} image(s): "
                       "too few to draw val from, so val is empty. Add val.txt (one image id per line).")  # fmt: skip
        return {**split, "val": []}, source
    index = {stem: i for i, stem in enumerate(stems)}
    every = presence()
    known = [s for s in train if s in index]  # unknown stems are reported by apply_split
    drawn = stratified_split(known, [every[index[s]] for s in known], val_fraction, 0.0, seed)
    out = {**split, "train": drawn["train"] + [s for s in train if s not in index], "val": drawn["val"]}
    return out, f"{source}; no val list: val drawn from the train list by seed {seed}, val_fraction {val_fraction}"


class SavedSplit:
    """A one-folder split kept with the run: in checkpoints (``state_dict``) and as list files in the run folder.

    Mixed into a DataModule (before ``BaseDataModule``) that sets ``split`` (stems in use), ``saved_split`` (from a
    checkpoint), ``all_samples`` (the samples of each split) and ``split_dir``.
    """

    split: dict[str, list[str]] | None
    saved_split: dict[str, list[str]] | None
    all_samples: dict[str, list[tuple[Path, Any]]] | None
    split_dir: Path | None
    datasets: dict[str, Any]
    root: Path

    def split_samples(self) -> dict[str, list[tuple[Path, Any]]]:
        """The samples of each split (the DataModule chooses them: ``choose_split``)."""
        raise NotImplementedError

    def samples_of(self, split: str) -> list[tuple[Path, Any]]:
        """The samples of ``split`` of the one-folder dataset; an empty split is an error naming what to change."""
        samples = self.split_samples()[split]
        voc = getattr(self, "voc", None)
        if not samples and voc is not None and self.split_dir is None:
            raise ValueError(
                f"The Pascal VOC export '{voc}' has no {split} images: add ImageSets/Segmentation/{split}.txt (one "
                "image id with a mask per line)"
                + (", or more ids to train.txt to draw val from." if split == "val" else ".")
            )
        if not samples:
            raise ValueError(
                f"The {split} split of the one-folder dataset '{self.root}' is empty; set "
                f"data.init_args.{split}_fraction above 0 (or list images in {split}.txt of split_dir)."
            )
        return samples

    def state_dict(self) -> dict[str, Any]:
        """The one-folder split, saved in checkpoints so that a run is evaluated on the split it trained with."""
        return {"split": self.split} if self.split is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take the split saved in a checkpoint; datasets built from another split are built again."""
        saved = state_dict.get("split")
        if saved is None or saved == self.split:
            return
        self.saved_split = saved
        if self.split_dir is None:
            self.split, self.all_samples = None, None
            self.datasets = {k: v for k, v in self.datasets.items() if k == "predict"}

    def write_split(self, stage: str | None) -> None:
        """When fitting, write the split's lists into the run folder (not in fast_dev_run: it has no run folder, its
        log_dir would be the working directory)."""
        trainer = getattr(self, "trainer", None)
        if stage != "fit" or self.split is None or trainer is None or not trainer.is_global_zero:
            return
        if trainer.fast_dev_run:
            return
        folder = write_split_lists(self.split, Path(trainer.log_dir or trainer.default_root_dir) / "split")
        rank_zero_info(f"[vitdense] split lists written to {folder}")


def export_subsets(split: str, subsets: dict[str, tuple[str, ...]] | None, root: Path) -> tuple[str, ...] | None:
    """The subsets of an export at ``root`` that make ``split`` where the export names its splits (``subsets``, e.g. a
    CVAT project's Train / Validation / Test), else None (the one-folder split applies); a split the export has no
    subset for is an error naming them."""
    if subsets is None:
        return None
    if split not in subsets:
        names = ", ".join(s for group in subsets.values() for s in group)
        name = {"val": "Validation", "test": "Test"}.get(split, "Train")
        raise ValueError(
            f"The {split} split of '{root}': the export has no subset for it (its subsets: {names}). Add a "
            f"{name} subset to the CVAT project and export again."
        )
    return subsets[split]
