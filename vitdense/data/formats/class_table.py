"""Class tables: the classes of a dataset with their names and, for colour-coded masks, their RGB colours.

Read from ``classes.txt`` (``name``, ``<id> <name>`` or ``<id> <name> <r,g,b>`` per line; a line whose id is the
``ignore_index`` names the void colour), from CVAT's ``labelmap.txt`` (``name:r,g,b:parts:actions``, as exported with
"Segmentation mask 1.1"), from labelme's ``labels.txt`` (``__ignore__``, ``_background_``, then the classes, read as
``labelme2voc.py`` reads it), from CamVid's ``label_colors.txt`` (``r g b name``), or from a ``classes:`` list in the
data config. ``ColorLookup`` turns an RGB mask into class ids through a table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypedDict

import numpy as np
from typing_extensions import NotRequired

RGB = tuple[int, int, int]


class ClassSpec(TypedDict):
    """One class of a ``classes:`` list in the data config."""

    name: str
    color: NotRequired[RGB]


@dataclass
class ClassTable:
    """Class names in id order, their colours (or ``None``), and the colours of void pixels (-> ignore_index)."""

    names: list[str]
    colors: list[RGB] | None = None
    void_colors: list[RGB] = field(default_factory=list)
    source: str = "class_names"


_COLOR = r"(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})"
_NUMBERED = re.compile(rf"^(\d+)[\s:,]+(.+?)(?:\s+{_COLOR})?$")


def _color(values: tuple[str, ...] | list[int], where: str) -> RGB:
    rgb = tuple(int(v) for v in values)
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"{where}: colour {list(rgb)} is not three values in 0..255 (write it as r,g,b).")
    return rgb


def read_classes_txt(path: Path, ignore_index: int) -> ClassTable:
    """``classes.txt``: one class per line, ``name``, ``<id> <name>`` or ``<id> <name> <r,g,b>``; ``#`` comments.

    Numbered lines must number the classes 0..K-1; a line numbered ``ignore_index`` names the void class (its
    colour marks void pixels in colour masks). Colours are given on every class line or on none.
    """
    lines = [(n, s.strip()) for n, s in enumerate(path.read_text().splitlines(), 1) if s.strip()]
    lines = [(n, s) for n, s in lines if not s.startswith("#")]
    if not lines:
        raise ValueError(f"'{path}' lists no classes; write one class per line (`<id> <name> <r,g,b>`).")
    if all(re.match(r"^\d+[\s:,]", s) for _, s in lines):
        by_id: dict[int, re.Match] = {}
        for n, s in lines:
            m = _NUMBERED.match(s)
            cid = int(m.group(1))  # type: ignore[union-attr]
            if cid in by_id:
                raise ValueError(f"'{path}' line {n}: class id {cid} appears twice; give each id one line.")
            by_id[cid] = m  # type: ignore[assignment]
    elif lines[0][1] == LABELME_IGNORE:  # labelme's labels.txt saved as classes.txt: ids as labelme2voc gives them
        return read_labelme_labels(path, ignore_index)
    else:  # plain names in id order
        by_id = {i: _NUMBERED.match(f"{i} {s}") for i, (_, s) in enumerate(lines)}  # type: ignore[misc]
    void = by_id.pop(ignore_index, None)
    ids = sorted(by_id)
    if ids != list(range(len(ids))):
        raise ValueError(
            f"'{path}' numbers its classes {ids}; ids must run 0..K-1 (a line for ignore_index={ignore_index} names "
            "the void colour)."
        )
    class_colored = [by_id[i].group(3) is not None for i in ids]
    if any(class_colored) and not all(class_colored):
        missing = [by_id[i].group(2) for i, c in zip(ids, class_colored) if not c]
        raise ValueError(f"'{path}' gives colours to some classes but not to {missing}; give every class an r,g,b.")
    names = [by_id[i].group(2).strip() for i in ids]
    colors = [_color(by_id[i].groups()[2:], f"'{path}' class {i}") for i in ids] if any(class_colored) else None
    void_colors = [_color(void.groups()[2:], f"'{path}' void line")] if void is not None and void.group(3) else []
    return ClassTable(names, colors, void_colors, source=f"'{path}'")


LABELME_IGNORE, LABELME_BACKGROUND = "__ignore__", "_background_"


def read_labelme_labels(path: Path, ignore_index: int) -> ClassTable:
    """labelme's ``labels.txt`` in ``labelme2voc.py``'s convention: line 1 ``__ignore__`` (void: ``ignore_index``,
    where labelme2voc writes -1), line 2 ``_background_`` (class 0, also the area no shape covers), then classes
    1..K in file order. A file starting at ``_background_`` (no ``__ignore__`` line) reads the same."""
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if names[:1] == [LABELME_IGNORE]:
        names = names[1:]
    if names[:1] != [LABELME_BACKGROUND]:
        raise ValueError(
            f"'{path}' starts with {names[:2]}, but labelme's labels.txt starts `__ignore__`, `_background_` "
            "(labelme2voc.py requires both). Add those two lines, or name the file classes.txt if it is a plain "
            "list of classes (class id = line number - 1)."
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice or LABELME_IGNORE in names:
        raise ValueError(f"'{path}' lists {twice or [LABELME_IGNORE]} more than once; give each label one line.")
    convention = (
        f"labelme2voc's convention: __ignore__ -> void ({ignore_index}), _background_ = class 0 (also the area no "
        f"shape covers), the other {len(names) - 1} labels = classes 1..{len(names) - 1} in file order"
    )
    return ClassTable(names, source=f"'{path}' ({convention})")


def read_camvid_colors(path: Path, ignore_index: int) -> ClassTable:
    """CamVid's ``label_colors.txt`` (the original release's, datumaro's camvid format): ``r g b name`` per line,
    class ids in file order, except a class named ``Void`` (any case): its colour marks void pixels (ignore_index)."""
    names: list[str] = []
    colors: list[RGB] = []
    void: list[RGB] = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = re.fullmatch(r"(\d+)\s+(\d+)\s+(\d+)\s+(\S+)", text)
        if match is None:
            raise ValueError(
                f"'{path}' line {n}: {text!r} is not `r g b name` (CamVid's label_colors.txt, e.g. `64 128 64 Animal`)."
            )
        name, color = match.group(4), _color(match.groups()[:3], f"'{path}' line {n}")
        if name.lower() == "void":
            void.append(color)
        elif name in names:
            raise ValueError(f"'{path}' line {n}: class '{name}' appears twice; give each class one line.")
        else:
            names.append(name)
            colors.append(color)
    if not names:
        raise ValueError(f"'{path}' lists no classes; write one `r g b name` line per class.")
    void_said = f"Void -> void ({ignore_index})" if void else "no Void line"
    convention = f"CamVid's label_colors.txt: {void_said}, {len(names)} classes = ids 0..{len(names) - 1} in file order"
    return ClassTable(names, colors, void, source=f"'{path}' ({convention})")


def read_table_file(path: Path, ignore_index: int) -> ClassTable:
    """A class table file named in the config (``data.class_table``): CVAT's ``labelmap.txt`` by its name, labelme's
    ``labels.txt`` or a ``classes.txt`` by its lines."""
    if not path.is_file():
        raise FileNotFoundError(
            f"data.class_table '{path}' is not a file; give the path of labels.txt (labelme), labelmap.txt (CVAT) "
            "or classes.txt."
        )
    if path.name == "labelmap.txt":
        return read_cvat_labelmap(path)
    if path.name == "labels.txt":
        return read_labelme_labels(path, ignore_index)
    if path.name == "label_colors.txt":
        return read_camvid_colors(path, ignore_index)
    return read_classes_txt(path, ignore_index)


def read_cvat_labelmap(path: Path) -> ClassTable:
    """CVAT's ``labelmap.txt`` (Segmentation mask 1.1): ``name:r,g,b:parts:actions`` per line, ids in file order."""
    names, colors = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":")
        match = re.fullmatch(_COLOR, parts[1].strip()) if len(parts) >= 2 else None
        if match is None:
            raise ValueError(
                f"'{path}' line {n}: {line.strip()!r} is not `name:r,g,b:parts:actions` (CVAT's labelmap.txt)."
            )
        names.append(parts[0].strip())
        colors.append(_color(match.groups(), f"'{path}' line {n}"))
    if not names:
        raise ValueError(f"'{path}' lists no labels; export the dataset again with CVAT's Segmentation mask 1.1.")
    return ClassTable(names, colors, source=f"'{path}'")


def table_from_specs(specs: list[ClassSpec]) -> ClassTable:
    """The table of a ``classes:`` list in the data config (class ids in list order)."""
    if not specs:
        raise ValueError("data.classes is an empty list; give one {name, color} entry per class, or leave it unset.")
    has_color = ["color" in s and s["color"] is not None for s in specs]
    if any(has_color) and not all(has_color):
        missing = [s["name"] for s, c in zip(specs, has_color) if not c]
        raise ValueError(f"data.classes gives colours to some classes but not to {missing}; give every class a color.")
    colors = [_color(list(s["color"]), f"data.classes '{s['name']}'") for s in specs] if all(has_color) else None
    return ClassTable([s["name"] for s in specs], colors, source="data.classes")


def drop_void_classes(table: ClassTable, void_classes: list[str]) -> ClassTable:
    """Move the classes named in ``void_classes`` out of the table: their colours mark void pixels."""
    if not void_classes:
        return table
    unknown = [v for v in void_classes if v not in table.names]
    if unknown:
        raise ValueError(f"void_classes {unknown} are not in the class table {table.source} ({table.names}).")
    keep = [i for i, n in enumerate(table.names) if n not in void_classes]
    if table.colors is None:  # polygon labels: the readers draw void labels as ignore_index
        return ClassTable([table.names[i] for i in keep], None, table.void_colors, table.source)
    void = [table.colors[i] for i, n in enumerate(table.names) if n in void_classes]
    return ClassTable(
        [table.names[i] for i in keep], [table.colors[i] for i in keep], table.void_colors + void, table.source
    )


def _codes(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class ColorLookup:
    """RGB colour -> class id through a class table; void colours -> ``ignore_index``."""

    def __init__(
        self, table: ClassTable, ignore_index: int, unknown_colors: Literal["error", "ignore"] = "error"
    ) -> None:
        """Index the table's colours.

        Args:
            table: Class table with colours.
            ignore_index: Id given to void colours (and to unknown ones with ``unknown_colors='ignore'``).
            unknown_colors: ``error``: a colour in no class entry is an error; ``ignore``: it maps to ignore_index.
        """
        if table.colors is None:
            raise ValueError(f"The class table {table.source} has no colours, so colour masks cannot be read.")
        colors = [*table.colors, *table.void_colors]
        ids = [*range(len(table.colors)), *[ignore_index] * len(table.void_colors)]
        codes = _codes(np.array(colors, np.int64))
        seen: dict[int, int] = {}
        for k, code in enumerate(codes.tolist()):
            if code in seen and ids[seen[code]] != ids[k]:
                names = [*table.names, *["void"] * len(table.void_colors)]
                raise ValueError(
                    f"The class table {table.source} gives the colour {list(colors[k])} to both "
                    f"'{names[seen[code]]}' and '{names[k]}'; each colour must mean one class."
                )
            seen[code] = k
        order = np.argsort(codes)
        self.codes, self.ids = codes[order], np.array(ids, np.int64)[order]
        self.ignore_index, self.unknown_colors, self.source = ignore_index, unknown_colors, table.source

    def __call__(self, rgb: np.ndarray, path: str | Path) -> np.ndarray:
        """Class ids ``(H, W)`` of an ``(H, W, 3)`` colour mask; ``path`` names the file in errors."""
        codes = _codes(rgb)
        pos = np.clip(np.searchsorted(self.codes, codes), 0, len(self.codes) - 1)
        known = self.codes[pos] == codes
        ids = np.where(known, self.ids[pos], self.ignore_index)
        if self.unknown_colors == "error" and not known.all():
            found, counts = np.unique(codes[~known], return_counts=True)
            top = np.argsort(-counts)[:5]
            listed = ", ".join(
                f"({c >> 16},{(c >> 8) & 255},{c & 255}) x {n} px" for c, n in zip(found[top], counts[top])
            )
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            raise ValueError(
                f"Mask '{path}' has {len(found)} colour(s) in no class entry of {self.source}: {listed}{more}. "
                "Add them to the class table, name them as void (void_classes, or a classes.txt line with the "
                "ignore_index id), or set unknown_colors: ignore to map them to ignore_index."
            )
        return ids


def find_class_table(
    root: Path,
    ignore_index: int,
    classes: list[ClassSpec] | None,
    native: Callable[[], ClassTable | None],
    table_file: Path | None = None,
) -> ClassTable | None:
    """The class table of a dataset: ``classes`` from the config, else the file ``table_file`` (``data.class_table``),
    else ``root/classes.txt``, else CVAT's ``root/labelmap.txt``, else labelme's ``root/labels.txt``, else CamVid's
    ``root/label_colors.txt``, else the classes the annotation file states (``native()``: COCO categories, CVAT labels).
    """
    if classes is not None:
        return table_from_specs(classes)
    if table_file is not None:
        return read_table_file(table_file, ignore_index)
    if (root / "classes.txt").is_file():
        return read_classes_txt(root / "classes.txt", ignore_index)
    if (root / "labelmap.txt").is_file():
        return read_cvat_labelmap(root / "labelmap.txt")
    if (root / "labels.txt").is_file():
        return read_labelme_labels(root / "labels.txt", ignore_index)
    if (root / "label_colors.txt").is_file():
        return read_camvid_colors(root / "label_colors.txt", ignore_index)
    return native()
