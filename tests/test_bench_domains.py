"""The pure helpers of benchmarks/domains.py: seeded splits, mask conversions, blob checks of a git mirror."""

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


def _bmp(array: np.ndarray, mode: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).convert(mode).save(out, format="BMP")
    return out.getvalue()


def test_ph2_lesion_masks_1bit_and_rgb_to_class_ids():
    lesion = np.array([[0, 255, 255], [0, 0, 255]], np.uint8)
    expected = [[0, 1, 1], [0, 0, 1]]
    assert domains.lesion_to_class(_bmp(lesion, "1")).tolist() == expected  # the release's 1-bit masks
    assert domains.lesion_to_class(_bmp(lesion, "RGB")).tolist() == expected  # IMD002's RGB 0/255 mask


def test_ph2_builder_reads_the_release_layout_into_a_domain(tmp_path):
    repo, ids = tmp_path / "repo", ["IMD002", "IMD003", "IMD004", "IMD006"]
    rng = np.random.default_rng(0)
    for i, stem in enumerate(ids):
        folder = repo / domains.PH2_DIR / stem
        (folder / f"{stem}_Dermoscopic_Image").mkdir(parents=True)
        (folder / f"{stem}_lesion").mkdir()
        image = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        (folder / f"{stem}_Dermoscopic_Image" / f"{stem}.bmp").write_bytes(_bmp(image, "RGB"))
        lesion = np.zeros((6, 8), np.uint8)
        lesion[1:5, 2 : 3 + i] = 255
        (folder / f"{stem}_lesion" / f"{stem}_lesion.bmp").write_bytes(_bmp(lesion, "1" if i else "RGB"))
        (folder / f"{stem}_lesion" / f"{stem}_lesion.jpg").write_bytes(b"\xff\xd8\xff later JPEG copy, not read")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "data")
    domain = domains.ph2(domains.GitMirror(repo), seed=0)
    assert domain.classes == ["skin", "lesion"]
    assert sorted(s.stem for split in domain.splits.values() for s in split) == ids
    assert [len(domain.splits[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    summary = domains.write_domain(domain, tmp_path / "out", {"repo": "test"})
    assert summary["splits"]["train"]["sizes"] == "8x6" and summary["splits"]["train"]["void_share"] == 0
    masks = [np.array(Image.open(f)) for f in sorted((tmp_path / "out").glob("*/masks/*.png"))]
    assert len(masks) == 4 and set(np.unique(masks).tolist()) == {0, 1}
    assert sum(int((m == 1).sum()) for m in masks) == sum(4 * (1 + i) for i in range(4))  # every lesion pixel, only
    stem = domain.splits["train"][0].stem
    source = repo / domains.PH2_DIR / stem / f"{stem}_Dermoscopic_Image" / f"{stem}.bmp"
    assert (tmp_path / "out" / "train" / "images" / f"{stem}.bmp").read_bytes() == source.read_bytes()
