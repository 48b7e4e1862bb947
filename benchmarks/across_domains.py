"""The across-domain table of the segmentation recipes, and the leave-one-domain-out choice of a default.

    python benchmarks/across_domains.py                 # reads benchmarks/results/recipes/, writes across_domains.md
    python benchmarks/across_domains.py --data-root /nonexistent   # the same tables from the committed files alone

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

The row ``class_weights=auto`` is what the rule chooses from each domain's training pixel shares. They are read from
the built domain (``<data-root>/<domain>/domain.json``, benchmarks/domains.py) when it is there, and kept in
``<results>/rule_inputs.json`` (classes, train pixel shares, the source repository and commit they were counted
from), so a clone without the data rebuilds the same tables; a built domain that differs from the committed entry
replaces it, and the script says so.

Rows named ``field: ...`` (benchmarks/field_trainers.py: torchgeo's and terratorch's own trainers, same budget and
scoring) are peers: table 1 lists them first, with their gain over the plain-loop peer, and table 2 never chooses them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from domains import DOMAINS  # benchmarks/domains.py: the domains it builds
from field_trainers import FIELD  # benchmarks/field_trainers.py: the name prefix of the field's trainers' rows
from recipes import DATA_ROOT  # benchmarks/recipes.py: where benchmarks/domains.py wrote the domains (domain.json)
from recipes import PEER_ROW as PEER

from vitdense.data.recipe_rules import class_weight_rule

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "recipes"
DOCS = REPO / "docs" / "recipes.md"
BLOCK = ("<!-- across -->\n", "<!-- /across -->\n")
# CamVid rows were named by their full settings before the template took them as defaults: the same recipes.
CAMVID_ALIASES = {"lr=3e-4,layer_decay=0.9,head_lr_mult=10": "class_weights=off", "default, seed 1": "seed=1"}
# CamVid rows named with a seed that are kept: the peer's and the field's trainers' other seeds and the template's
# reruns (the rest are ablations of earlier templates, named "<recipe>, seed N")
SEEDED = (f"{PEER}, seed=", FIELD, "template rerun, seed=")
MEAN_ROW = "class_weights=auto, mean over seeds"
RULE_INPUTS = "rule_inputs.json"  # in --results: what class_weight_rule reads, per domain, committed
RULE_INPUTS_ABOUT = (
    "class_weight_rule's inputs per domain: classes and train pixel shares, copied from the domain.json that "
    "benchmarks/domains.py built from the source (repo, commit); written by benchmarks/across_domains.py"
)
SOURCE_KEYS = ("repo", "commit")  # of domain.json: where its pixel shares were counted (CamVid has no commit)
# The template as shipped (windows, keep_largest: auto) at each seed: its first-named row that a domain has. PH2's
# second seed ran as `seed=1,class_weights=off` before the rule chose off there (the same settings as the template on
# PH2); the seed-1 rows of CWFID and the magnetic tiles were trained scoring by windows.
SHIPPED_ROWS = {0: ("template rerun, inference mode=slide,keep_largest=auto",),
                1: ("template rerun, seed=1, inference keep_largest=auto",
                    "seed=1,class_weights=off, inference mode=slide,keep_largest=auto",
                    "template rerun, seed=1")}  # fmt: skip
# (the last: a seed-1 run of the template once it shipped both, on CamVid and ccp; on CWFID and the magnetic tiles the
# row of that name ran before keep_largest and is scored again under the first name)
SHIPPED_MEAN = "template as shipped, mean over seeds"


def seed_row(name: str, seed: int) -> str:
    """The row of recipe ``name`` (``default`` or ``class_weights=off``) run at ``seed``, as recipes.py names it."""
    if seed == 0:
        return name
    return f"seed={seed}" if name == "default" else f"seed={seed},{name}"


def mean_of_runs(runs: list[dict]) -> dict:
    """One row from the runs of a recipe at several seeds: the mean val and test mIoU, and ``seeds``."""
    return {k: sum(r[k] for r in runs) / len(runs) for k in ("val", "test")} | {"seeds": len(runs)}


def merge_peer_seeds(rows: dict[str, dict], peer: str = PEER) -> None:
    """Replace a peer's rows (``peer`` at seed 0, ``peer, seed=N``) by one row: their mean, with ``seeds``."""
    runs = [rows.pop(n) for n in sorted(rows) if n == peer or n.startswith(f"{peer}, seed=")]
    if runs:
        rows[peer] = mean_of_runs(runs)


def load_rows(results: Path) -> dict[str, dict[str, dict]]:
    """domain -> recipe name -> {"val": mIoU, "test": mIoU}; CamVid's test is its val (see the module text)."""
    table: dict[str, dict[str, dict]] = {}
    camvid = results / "results.json"
    if camvid.is_file():
        rows = json.loads(camvid.read_text())
        kept = {n: r for n, r in rows.items() if r.get("steps", 600) == 600 and r.get("crop", 224) == 224}
        kept = {n: r for n, r in kept.items() if "seed" not in n or n in CAMVID_ALIASES or n.startswith(SEEDED)}
        table["camvid"] = {CAMVID_ALIASES.get(n, n): {"val": r["mIoU"], "test": r["mIoU"]} for n, r in kept.items()}
    for path in sorted(results.glob("*/results.json")):
        rows = json.loads(path.read_text())
        table[path.parent.name] = {
            n: {"val": r["mIoU"], "test": r.get("test_mIoU")} for n, r in rows.items() if r.get("test_mIoU") is not None
        }
    for rows in table.values():
        merge_peer_seeds(rows)
        for field_peer in {n.split(", seed=")[0] for n in rows if n.startswith(FIELD)}:
            merge_peer_seeds(rows, field_peer)
    # a domain counts once the peer and the template ran on it: the template's row is named by the class weights it
    # ran with (default = sqrt median frequency, the template's value until class_weights: auto)
    table = {d: rows for d, rows in table.items() if PEER in rows and {"default", "class_weights=off"} & set(rows)}
    # CamVid keeps a long history of ablations of earlier templates: only the recipes also run on another domain.
    elsewhere = {n for d, rows in table.items() if d != "camvid" for n in rows}
    if "camvid" in table and len(table) > 1:
        table["camvid"] = {n: r for n, r in table["camvid"].items() if n in elsewhere or n.startswith(SEEDED)}
    return table


def rule_input(meta: Path) -> dict:
    """What class_weight_rule reads from a built domain's ``domain.json``: its classes and train pixel shares, with
    the repository and commit they were counted from."""
    info = json.loads(meta.read_text())
    source = {k: info[k] for k in SOURCE_KEYS if k in info}
    return {"source": source, "classes": info["classes"], "pixel_shares": info["splits"]["train"]["pixel_shares"]}


def load_rule_inputs(path: Path, data_root: Path, needed: list[str]) -> dict[str, dict]:
    """domain -> its rule input: from ``<data_root>/<domain>/domain.json`` where built, else the committed entry of
    ``path``. Built domains that are new or differ are written back to ``path`` (and said). A domain in ``needed``
    with neither stops the run: without it its rule rows would vanish from the rewritten tables and docs."""
    committed = json.loads(path.read_text())["domains"] if path.is_file() else {}
    inputs = dict(committed)
    for domain in sorted({*DOMAINS, *committed, *needed}):
        meta = data_root / domain / "domain.json"
        if meta.is_file():
            inputs[domain] = rule_input(meta)
            if domain not in committed:
                print(f"{path.name}: {domain} added from '{meta}'")
            elif inputs[domain] != committed[domain]:
                print(f"{path.name}: {domain} updated from '{meta}' (it differed from the committed entry)")
        elif domain in needed and domain not in committed:
            raise SystemExit(
                f"'{meta}' not found and '{path}' has no entry for {domain}: its class_weights=auto row needs its "
                f"training pixel shares. Build the domain first (python benchmarks/domains.py {domain}) or point "
                "--data-root at where it is."
            )
    if inputs != committed:
        kept = {"about": RULE_INPUTS_ABOUT, "domains": dict(sorted(inputs.items()))}
        path.write_text(json.dumps(kept, indent=1) + "\n")
    return inputs


def add_rule_rows(table: dict[str, dict[str, dict]], inputs: dict[str, dict]) -> dict[str, str]:
    """Row ``class_weights=auto``: on each domain, the measured row of what the rule chooses from that domain's
    training pixel shares (``inputs``, see load_rule_inputs): ``default`` (sqrt median-frequency) or
    ``class_weights=off``. Returns the choices."""
    chosen = {}
    for domain, rows in table.items():
        choice = class_weight_rule(np.array(inputs[domain]["pixel_shares"]), inputs[domain]["classes"])
        name = "default" if choice.value == "sqrt_median_frequency" else "class_weights=off"
        chosen[domain] = f"{name}: {choice.reason}"
        by_seed = {seed: rows[seed_row(name, seed)] for seed in range(10) if seed_row(name, seed) in rows}
        for seed, row in by_seed.items():
            rows["class_weights=auto" + (f", seed {seed}" if seed else "")] = row
        if 0 in by_seed and len(by_seed) > 1:
            rows[MEAN_ROW] = mean_of_runs(list(by_seed.values()))
    return chosen


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
    complete = [name for name, by in val.items()
                if set(by) == set(domains) and "seed" not in name and not name.startswith(FIELD)]  # fmt: skip
    rows = []
    for left in domains:
        others = [d for d in domains if d != left]

        def score(name: str, others: list[str] = others) -> tuple[float, float]:
            values = [val[name][d] for d in others]
            return min(values), sum(values) / len(values)

        best = max(score(name) for name in complete)
        tied = sorted(name for name in complete if score(name) == best)  # same runs on the others: val cannot choose
        rows.append({"left_out": left, "chosen": " = ".join(tied), "worst_val_gain_others": best[0],
                     "test_gain_left_out": " / ".join(f"{test[name][left]:+.1f}" for name in tied)})  # fmt: skip
    return rows


def shipped(rows: dict[str, dict]) -> dict | None:
    """The shipped template on one domain: the mean of its rows in SHIPPED_ROWS (one per seed), or None."""
    firsts = (next((n for n in names if n in rows), None) for names in SHIPPED_ROWS.values())
    runs = [rows[name] for name in firsts if name is not None]
    return mean_of_runs(runs) if runs else None


def add_shipped_rows(table: dict[str, dict[str, dict]]) -> None:
    """Row ``SHIPPED_MEAN`` on each domain where the shipped template ran: the mean of its seeds (see shipped)."""
    for rows in table.values():
        template = shipped(rows)
        if template is not None:
            rows[SHIPPED_MEAN] = template


def field_gains(table: dict[str, dict[str, dict]]) -> dict[str, dict[str, tuple[dict, float]]]:
    """field peer -> domain -> (its row, the shipped template's test mIoU minus its own, in points)."""
    out: dict[str, dict[str, tuple[dict, float]]] = {}
    for domain, rows in table.items():
        template = shipped(rows)
        for name, row in rows.items():
            if name.startswith(FIELD) and template is not None:
                out.setdefault(name, {})[domain] = (row, 100 * (template["test"] - row["test"]))
    return out


def field_lines(table: dict[str, dict[str, dict]]) -> list[str]:
    """The table of the shipped template against the field's trainers (empty when none ran)."""
    by_peer = field_gains(table)
    if not by_peer:
        return []
    domains = sorted(table)
    lines = ["", "## The shipped template against the field's trainers", "",
             "Test mIoU of torchgeo's and terratorch's own trainers (benchmarks/field_trainers.py; same weights, "
             "budget, crops and scoring) and, in brackets, the gain of the template as shipped (scored by windows; "
             "the mean of its seeds, in the first row) over them in points.", "",
             "| trainer | " + " | ".join(domains) + " | worst gain | domains |",
             "| --- | " + " | ".join("---" for _ in domains) + " | --- | --- |"]  # fmt: skip
    templates = {d: shipped(table[d]) for d in domains}
    lines.append("| template as shipped (by windows) | " + " | ".join(
        f"{t['test']:.3f}" + seeds_note(t, " (", ")") if t else "" for t in templates.values()) + " | | |")  # fmt: skip
    for name, by in sorted(by_peer.items()):
        cells = [f"{by[d][0]['test']:.3f} ({by[d][1]:+.1f}{seeds_note(by[d][0], '; ')})" if d in by else ""
                 for d in domains]  # fmt: skip
        worst = min(gain for _, gain in by.values())
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {worst:+.1f} | {len(by)} of {len(domains)} |")
    return lines


def seeds_note(row: dict, before: str, after: str = "") -> str:
    """``N seeds`` between ``before`` and ``after`` for a cell that averages N > 1 seeds, else nothing."""
    return f"{before}{row['seeds']} seeds{after}" if row.get("seeds", 1) > 1 else ""


def markdown(table: dict[str, dict[str, dict]], chosen: dict[str, str]) -> str:
    domains = sorted(table)
    test = gains(table, "test")
    lines = ["# Segmentation recipes across domains", "",
             "Test mIoU of each recipe and, in brackets, its gain over the plain-loop peer in points (600 steps x 8, "
             "crop 224, ViT-Ti ImageNet weights, seed 0 unless the row names another). The peer's cell is the mean of "
             "its seeds where it ran more than one, and every gain is over that mean; a cell that averages seeds "
             "says how many. "
             "CamVid's column is its val split (its test split is an "
             "outside held-out check, not in this project). Written by benchmarks/across_domains.py from the rows of "
             "benchmarks/recipes.py.", "",
             "| recipe | " + " | ".join(domains) + " | mean gain | worst gain |",
             "| --- | " + " | ".join("---" for _ in domains) + " | --- | --- |"]  # fmt: skip
    peer_cells = [f"{table[d][PEER]['test']:.3f}" + seeds_note(table[d][PEER], " (", ")") for d in domains]
    lines.append(f"| {PEER} | " + " | ".join(peer_cells) + " | | |")
    for name in sorted(test, key=lambda n: (not n.startswith(FIELD), n != SHIPPED_MEAN, n != "default", n)):
        cells = [f"{table[d][name]['test']:.3f} ({test[name][d]:+.1f}{seeds_note(table[d][name], '; ')})"
                 if d in test[name] else "" for d in domains]  # fmt: skip
        done = len(test[name]) == len(domains)
        summary = (f"{sum(test[name].values()) / len(domains):+.1f} | {min(test[name].values()):+.1f}" if done
                   else " | ")  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {summary} |")
    lines += field_lines(table)
    if chosen:
        lines += [
            "",
            "`class_weights=auto` is not a run of its own: on each domain it is the row of what the rule "
            "(`vitdense.data.recipe_rules.class_weight_rule`) chooses from that domain's training pixels:",
            "",
        ]
        lines += [f"- {domain}: {why}" for domain, why in sorted(chosen.items())]
    lodo = leave_one_out(table)
    if lodo:
        lines += ["", "## Leave one domain out", "",
                  "The recipe that the other domains choose (largest worst-case val gain over the peer on them; only "
                  "recipes run on every domain), and its test gain on the domain left out. Recipes that tie on the "
                  "others (the same runs there) are listed together, with their test gains in the same order.", "",
                  "| left out | chosen by the others | worst val gain on the others | test gain on the left-out |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        lines += [f"| {r['left_out']} | {r['chosen']} | {r['worst_val_gain_others']:+.1f} | "
                  f"{r['test_gain_left_out']} |" for r in lodo]  # fmt: skip
    return "\n".join(lines) + "\n"


def replace_block(docs: Path, text: str) -> None:
    """Put the tables of ``text`` (its title and first paragraph left out: docs/recipes.md has its own, and its
    headings are one level deeper) between the ``<!-- across -->`` markers of ``docs``."""
    page = docs.read_text()
    if BLOCK[0] not in page or BLOCK[1] not in page:
        raise SystemExit(f"'{docs}' has no {BLOCK[0].strip()} ... {BLOCK[1].strip()} block: add the markers.")
    body = text[text.index("| recipe |") :].replace("\n## ", "\n### ")
    head, rest = page.split(BLOCK[0], 1)
    docs.write_text(head + BLOCK[0] + body + BLOCK[1] + rest.split(BLOCK[1], 1)[1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=RESULTS, help="benchmarks/recipes.py's output folder")
    built = f"benchmarks/domains.py's output (domain.json); where a domain is not built, <results>/{RULE_INPUTS}"
    p.add_argument("--data-root", type=Path, default=DATA_ROOT, help=built)
    p.add_argument("--docs", type=Path, default=DOCS, help="file whose <!-- across --> block gets the tables")
    args = p.parse_args(argv)
    table = load_rows(args.results)
    chosen = add_rule_rows(table, load_rule_inputs(args.results / RULE_INPUTS, args.data_root, sorted(table)))
    add_shipped_rows(table)
    text = markdown(table, chosen)
    (args.results / "across_domains.md").write_text(text)
    if args.docs.is_file():
        replace_block(args.docs, text)
    (args.results / "across_domains.json").write_text(
        json.dumps({"table": table, "rule_choices": chosen, "leave_one_domain_out": leave_one_out(table)}, indent=1)
    )
    print(text)


if __name__ == "__main__":
    main()
