"""One table per task across the sets of benchmarks/small_tasks.py: template vs plain loop, and the gain (accuracy,
box mAP, mask mAP: each task's first metric in small_tasks.TASKS).

    python benchmarks/small_tasks_across.py      # reads benchmarks/results/small_tasks/**, writes across.md there

Each row is one set at one budget both sides ran: the mean over seeds of the shipped template's row and of the
peer's, on test where the set has a test split and on val otherwise (the shared samples), and the gain (template -
peer, in points). The mean and the worst gain over the sets, per budget, close each table. Rows of variants
(``--variant``) are listed below the table, not counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from small_tasks import DATASETS, TASKS  # benchmarks/small_tasks.py

RESULTS = Path(__file__).resolve().parent / "results" / "small_tasks"
# The row that is the template as shipped today. Classification: plain "vitdense" rows are the template before commit
# a4df888 (lr 1e-4, layer decay 0.75, head x1); since 3005d60 (#31) the template has drop_path_rate 0, and
# its rows without ",drop_path_rate=0" are the template before it (0.1). Detection: the template ships Faster R-CNN
# since the runs of "head=faster_rcnn"; before, it was RetinaNet ("vitdense" rows of the new sets, "vitdense,
# head_lr_mult=10" of the raccoon sample, whose plain "vitdense" rows are RetinaNet before head_lr_mult 10, fab1ed5).
# Since 9899312 the detection template has layer_decay null (the rows say 1.0: the same lr for every layer) and
# scale_range auto; "head=faster_rcnn" rows are the Faster R-CNN template before it (layer decay 0.7, zoom 0.5-1.5).
# Since head.anchor_scale: auto, the shipped row is the run at the scale the rule gives the set at that size: 4 (the
# runs before it) on bccd, kangaroo and the raccoon sample; on deeppcb 1 at 192 px and 2 at 320 px, set by hand at
# commit 64f6edd (same settings otherwise), its ",anchor_scale=4" rows being the template before the rule.
# Instance: since 139cb40 configs/instance_coco.yaml has the detection template's optimizer (layer_decay null, the
# rows say 1.0; heads at 10x) and its scale_range and anchor_scale auto (the first run set the optimizer and
# scale_range with --set; anchor_scale auto gives that set the 4 it ran with). Plain "vitdense" rows before 139cb40 are
# the template with ViTDet's layer decay 0.7 and heads at 1x.
SHIPPED_ROW = {
    "classification": "vitdense, lr=3e-4,layer_decay=0.9,head_lr_mult=10,drop_path_rate=0",
    "detection": "vitdense, layer_decay=1.0,scale_range=auto",
    "instance": "vitdense, layer_decay=1.0,head_lr_mult=10,scale_range=auto",
}
ROW_NOTES = {
    "classification": {"vitdense": "the template before a4df888",
                       "vitdense, lr=3e-4,layer_decay=0.9,head_lr_mult=10": "the template before drop path 0"},
    "detection": {"vitdense": "RetinaNet, the template before Faster R-CNN",
                  "vitdense, head_lr_mult=10": "RetinaNet, the template before Faster R-CNN",
                  "vitdense, head=faster_rcnn": "the template before 9899312: layer decay 0.7, zoom 0.5-1.5",
                  "vitdense, layer_decay=1.0,scale_range=auto,anchor_scale=4": "the template before anchor_scale auto"},
    "raccoon_sample": {"vitdense": "RetinaNet before head_lr_mult 10"},
    "instance": {"vitdense": "the template before 139cb40: layer decay 0.7, heads at 1x"},
}  # fmt: skip
SHARED_NAME = {"classification": "hymenoptera_sample", "detection": "raccoon_sample"}  # instance: no shared sample


def budget_suffixes(rows: dict[str, dict]) -> list[str]:
    """The budgets the peer ran at, as row-name suffixes: "" (the set's default budget) first."""
    return sorted(name[len("peer") :] for name in rows if name == "peer" or name.startswith("peer @"))


def mean_of(rows: dict[str, dict], metric: str) -> float:
    return statistics.mean(r[metric] for r in rows.values())


def table(task: str, results: Path) -> list[str]:
    """The markdown lines of one task's table."""
    metric = TASKS[task]["metrics"][0]
    lines = [f"## {task} ({metric}; mean over seeds, last epoch)", "",
             "| set | split | template | peer | gain | seeds | epochs x batch, size | GFLOP/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    gains: dict[str, list[float]] = {}
    variants: list[str] = []
    sets = [(SHARED_NAME[task], results / f"{task}.json")] if task in SHARED_NAME else []
    sets += [(name, results / name / f"{task}.json") for name, d in DATASETS.items() if d["task"] == task]
    if not sets:
        lines.append(f"| no {task} set in small_tasks.DATASETS yet | | | | | | | |")
    for name, path in sets:
        if not path.is_file():
            lines.append(f"| {name} | not run | | | | | | |")
            continue
        rows = json.loads(path.read_text())
        template_row = SHIPPED_ROW[task]
        budgets = budget_suffixes(rows)
        if not budgets:  # gains are over the peer: without its rows there is nothing to compare
            lines.append(f"| {name} | the peer not run yet (template rows only: <set>/{task}.md) | | | | | | |")
            continue
        shipped = [suffix for suffix in budgets if template_row + suffix in rows]
        if not shipped:
            lines.append(f"| {name} | the shipped template not run here | | | | | | |")
        first = rows[template_row + shipped[0]] if shipped else next(iter(rows.values()))
        split = "test" if all(f"test_{metric}" in r for r in first.values()) else "val"
        key = f"test_{metric}" if split == "test" else metric
        for suffix in budget_suffixes(rows):
            template, peer = rows.get(template_row + suffix), rows[f"peer{suffix}"]
            if template is None:
                continue
            t, p = mean_of(template, key), mean_of(peer, key)
            every = [*template.values(), *peer.values()]
            budget = "; ".join(sorted({f"{r['epochs']}x{r['batch']}, {r['size']}" for r in every}))
            rate = f"{min(r['gflops'] for r in every):.0f}-{max(r['gflops'] for r in every):.0f}"
            gains.setdefault(budget if suffix else "each set's own budget", []).append(t - p)
            lines.append(f"| {name} | {split} | {t:.3f} | {p:.3f} | {100 * (t - p):+.1f} | "
                         f"{len(template)} / {len(peer)} | {budget} | {rate} |")  # fmt: skip
        for side in rows:
            variant = side.split(" @")[0]  # a row at another budget is the same variant as its default's
            if variant != template_row and side.startswith("vitdense"):
                v = mean_of(rows[side], key) if all(key in r for r in rows[side].values()) else float("nan")
                note = ROW_NOTES.get(name, {}).get(variant) or ROW_NOTES.get(task, {}).get(variant)
                note = f" ({note})" if note else ""
                variants.append(f"- {name}, {side}{note}: {v:.3f} {split} ({len(rows[side])} seeds)")
    if gains:
        lines.append("")
    for budget, values in sorted(gains.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"- at {budget}: gain over {len(values)} set(s) mean {100 * statistics.mean(values):+.1f}, "
                     f"worst {100 * min(values):+.1f} points")  # fmt: skip
    if variants:
        lines += ["", "Other vitdense rows (not the shipped template, not in the gains):", *variants]
    return [*lines, ""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=RESULTS, help="benchmarks/small_tasks.py's --out")
    args = p.parse_args()
    lines = ["# Small tasks across sets: shipped template vs plain loop", "",
             "Template and peer from the same ImageNet ViT-Ti weights, same images, epochs, batch and size "
             "(benchmarks/small_tasks.py). Test where the set has one, else val; nothing is chosen on either. "
             "Gain in points (x100). GFLOP/s: the fp32 matmul rate measured before each run (the CPU is shared).",
             ""]  # fmt: skip
    for task in TASKS:
        lines += table(task, args.results)
    (args.results / "across.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
