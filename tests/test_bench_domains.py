"""The pure helpers of benchmarks/domains.py: seeded splits, mask conversions, blob checks of a git mirror."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("bench_domains", Path(__file__).parents[1] / "benchmarks" / "domains.py")
domains = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["bench_domains"] = domains
_spec.loader.exec_module(domains)  # type: ignore[union-attr]


def test_split_is_seeded_disjoint_and_complete():
    stems = [f"{i:04d}" for i in range(100)]
    split = domains.split_stems(stems, seed=0)
    assert split == domains.split_stems(list(reversed(stems)), seed=0)  # input order does not matter
    assert split != domains.split_stems(stems, seed=1)
    assert [len(split[k]) for k in ("train", "val", "test")] == [70, 15, 15]
    assert sorted(split["train"] + split["val"] + split["test"]) == stems
    # adding an image moves no other image between splits it was not cut from: order is per name
    assert domains.hash_order(stems[:50], 0) == [s for s in domains.hash_order(stems, 0) if s in stems[:50]]


def test_binary_mask_and_colour_table_to_class_ids():
    grey = np.array([[0, 3, 127], [128, 250, 255]], np.uint8)  # JPEG-like noise around 0 and 255
    assert domains.binary_to_class(grey, 4).tolist() == [[0, 0, 0], [4, 4, 4]]
    rgb = np.array([[[0, 0, 0], [0, 255, 0]], [[255, 0, 0], [9, 9, 9]]], np.uint8)
    ids = domains.colors_to_ids(rgb, domains.CWFID_COLORS)
    assert ids.tolist() == [[0, 1], [2, domains.VOID]]  # an unknown colour is void


def _git(repo: Path, *cmd: str) -> None:
    subprocess.run(["git", "-C", str(repo), *cmd], check=True, capture_output=True)


def test_mirror_reads_blobs_and_rejects_lfs_pointers_and_wrong_magic(tmp_path):
    repo = tmp_path / "repo"
    (repo / "photos").mkdir(parents=True)
    (repo / "photos" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 jpeg")
    (repo / "photos" / "b.jpg").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    (repo / "photos" / "c.png").write_bytes(b"not a png")
    _git(repo, "init", "-q")
    _git(repo, "add", "photos")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "data")
    mirror = domains.GitMirror(repo)  # a checkout: its .git is used
    assert mirror.files("photos", ".jpg") == ["photos/a.jpg", "photos/b.jpg"]
    assert mirror.read("photos/a.jpg") == b"\xff\xd8\xff\xe0 jpeg"
    with pytest.raises(SystemExit, match="LFS pointer"):
        mirror.read("photos/b.jpg")
    with pytest.raises(SystemExit, match="does not start with the bytes of a png"):
        mirror.read("photos/c.png")
    with pytest.raises(SystemExit, match="not in the snapshot"):
        mirror.read("photos/missing.jpg")
