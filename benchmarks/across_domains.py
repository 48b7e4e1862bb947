"""The across-domain table of the segmentation recipes, and the leave-one-domain-out choice of a default.

    python benchmarks/across_domains.py                 # reads benchmarks/results/recipes/, writes across_domains.md

Reads the rows that benchmarks/recipes.py wrote: ``<results>/<domain>/results.json`` for each domain that
benchmarks/domains.py builds, and ``<results>/results.json`` for CamVid. CamVid's test split is kept out of this
project on purpose (it is an outside held-out check), so CamVid's "test" column is its val split: the CamVid rows were
chosen on it, which makes CamVid the one domain where "test" is not held out; the other domains' test splits were
never read to choose anything.

Two tables:

1. domain x recipe: each recipe's test mIoU and its gain over the plain-loop peer on that domain (points), with the
   mean and the worst gain over the domains where the recipe ran on all of them;
2. leave-one-domain-out: for each domain, the recipe that the other domains choose (the largest worst-case *val*
   gain over the peer on them, ties by the mean), and that recipe's *test* gain on the domain left out. A default
   may ship only if the domain left out still gains in every row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "recipes"
PEER = "peer: smp DPT (plain loop)"
# CamVid rows were named by their full settings before the template took them as defaults: the same recipes.
CAMVID_ALIASES = {"lr=3e-4,layer_decay=0.9,head_lr_mult=10": "class_weights=off"}


def load_rows(results: Path) -> dict[str, dict[str, dict]]:
    """domain -> recipe name -> {"val": mIoU, "test": mIoU}; CamVid's test is its val (see the module text)."""
    table: dict[str, dict[str, dict]] = {}
    camvid = results / "results.json"
    if camvid.is_file():
        rows = json.loads(camvid.read_text())
        table["camvid"] = {CAMVID_ALIASES.get(n, n): {"val": r["mIoU"], "test": r["mIoU"]} for n, r in rows.items()
                           if r.get("steps", 600) == 600 and r.get("crop", 224) == 224 and "seed" not in n}  # fmt: skip
    for path in sorted(results.glob("*/results.json")):
        rows = json.loads(path.read_text())
        table[path.parent.name] = {
            n: {"val": r["mIoU"], "test": r.get("test_mIoU")} for n, r in rows.items() if r.get("test_mIoU") is not None
        }
    table = {d: rows for d, rows in table.items() if PEER in rows and "default" in rows}
    # CamVid keeps a long history of ablations of earlier templates: only the recipes also run on another domain.
    elsewhere = {n for d, rows in table.items() if d != "camvid" for n in rows}
    if "camvid" in table and len(table) > 1:
        table["camvid"] = {n: r for n, r in table["camvid"].items() if n in elsewhere}
    return table


def gains(table: dict[str, dict[str, dict]], split: str) -> dict[str, dict[str, float]]:
    """recipe -> domain -> (recipe - peer) mIoU points on ``split``."""
    out: dict[str, dict[str, float]] = {}
    for domain, rows in table.items():
        for name, row in rows.items():
            if name != PEER:
                out.setdefault(name, {})[domain] = 100 * (row[split] - rows[PEER][split])
    return out


def leave_one_out(table: dict[str, dict[str, dict]]) -> list[dict]:
    """For each domain: the recipe the other domains choose on val (run on all domains), and its test gain there."""
    domains = sorted(table)
    val, test = gains(table, "val"), gains(table, "test")
    complete = [name for name, by in val.items() if set(by) == set(domains)]
    rows = []
    for left in domains:
        others = [d for d in domains if d != left]

        def score(name: str, others: list[str] = others) -> tuple[float, float]:
            values = [val[name][d] for d in others]
            return min(values), sum(values) / len(values)

        chosen = max(complete, key=score)
        rows.append({"left_out": left, "chosen": chosen, "worst_val_gain_others": score(chosen)[0],
                     "test_gain_left_out": test[chosen][left]})  # fmt: skip
    return rows


def markdown(table: dict[str, dict[str, dict]]) -> str:
    domains = sorted(table)
    test = gains(table, "test")
    lines = ["# Segmentation recipes across domains", "",
             "Test mIoU of each recipe and, in brackets, its gain over the plain-loop peer in points (600 steps x 8, "
             "crop 224, ViT-Ti ImageNet weights, seed 0). CamVid's column is its val split (its test split is an "
             "outside held-out check, not in this project). Written by benchmarks/across_domains.py from the rows of "
             "benchmarks/recipes.py.", "",
             "| recipe | " + " | ".join(domains) + " | mean gain | worst gain |",
             "| --- | " + " | ".join("---" for _ in domains) + " | --- | --- |"]  # fmt: skip
    peer_cells = [f"{table[d][PEER]['test']:.3f}" for d in domains]
    lines.append(f"| {PEER} | " + " | ".join(peer_cells) + " | | |")
    for name in sorted(test, key=lambda n: (n != "default", n)):
        cells = [f"{table[d][name]['test']:.3f} ({test[name][d]:+.1f})" if d in test[name] else "" for d in domains]
        done = len(test[name]) == len(domains)
        summary = (f"{sum(test[name].values()) / len(domains):+.1f} | {min(test[name].values()):+.1f}" if done
                   else " | ")  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {summary} |")
    lodo = leave_one_out(table)
    if lodo:
        lines += ["", "## Leave one domain out", "",
                  "The recipe that the other domains choose (largest worst-case val gain over the peer on them; only "
                  "recipes run on every domain), and its test gain on the domain left out.", "",
                  "| left out | chosen by the others | worst val gain on the others | test gain on the left-out |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        lines += [f"| {r['left_out']} | {r['chosen']} | {r['worst_val_gain_others']:+.1f} | "
                  f"{r['test_gain_left_out']:+.1f} |" for r in lodo]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=RESULTS, help="benchmarks/recipes.py's output folder")
    args = p.parse_args()
    table = load_rows(args.results)
    text = markdown(table)
    (args.results / "across_domains.md").write_text(text)
    (args.results / "across_domains.json").write_text(
        json.dumps({"table": table, "leave_one_domain_out": leave_one_out(table)}, indent=1)
    )
    print(text)


if __name__ == "__main__":
    main()
