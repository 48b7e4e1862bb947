"""Prediction files that hold one line per image (detection's ``predictions.jsonl``, classification's
``predictions.csv``), written by one or several processes.

Each process appends to its own part (``.predictions.jsonl.rank1``), never to a file another process writes: lines
of two processes appending to one file can interleave (an instance line with RLE masks is larger than one write).
After the last batch, rank 0 merges the parts into the file, in the order of the predict dataset, each image once.
The parts of every process must be visible to rank 0 (one machine, or a shared file system).
"""

from __future__ import annotations

import json
from pathlib import Path

INDEX = "index"  # key of a prediction that holds its image's index in the predict dataset (set by the writer)


def part_path(output_dir: Path, name: str, rank: int) -> Path:
    """The part of ``output_dir / name`` that process ``rank`` appends to."""
    return output_dir / f".{name}.rank{rank}"


def append_part(output_dir: Path, name: str, rank: int, rows: list[tuple[int | None, str]]) -> Path:
    """Append ``(dataset index or None, text)`` rows, each text one line of the final file, to the part of ``rank``."""
    path = part_path(output_dir, name, rank)
    with path.open("a") as f:
        f.writelines(json.dumps([index, text]) + "\n" for index, text in rows)
    return path


def merge_parts(output_dir: Path, name: str, header: str = "") -> Path | None:
    """Merge every process's part into ``output_dir / name`` (after ``header``) and remove the parts.

    Rows are ordered by dataset index and an index seen twice (a sampler that repeats images to even out the
    processes) is written once; rows without an index follow, in the order they were written.
    """
    parts = sorted(output_dir.glob(f".{name}.rank*"), key=lambda p: int(p.name.rsplit(".rank", 1)[1]))
    if not parts:
        return None
    indexed: dict[int, str] = {}
    unindexed: list[str] = []
    for part in parts:
        with part.open() as f:
            for line in f:
                index, text = json.loads(line)
                if index is None:
                    unindexed.append(text)
                else:
                    indexed.setdefault(index, text)
    path = output_dir / name
    with path.open("w", newline="") as f:
        f.write(header)
        f.writelines(indexed[i] for i in sorted(indexed))
        f.writelines(unindexed)
    for part in parts:
        part.unlink()
    return path
