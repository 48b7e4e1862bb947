"""Score the kept weights of a recipes.py run again with other inference settings, without training again.

    python benchmarks/rescore.py --domain ph2 --run RUN_DIR --base "template rerun" \
        --infer '{"mode": "slide", "flip": true}'

``RUN_DIR`` is a ``recipes.py --keep-weights`` run folder (``<out>/runs/<name>``: its ``recipe.yaml`` and
``final.pt``); ``--base`` is the row those weights produced in the domain's committed results
(benchmarks/results/recipes/<domain>/results.json, or --results). For each ``--infer`` the weights are scored on val
and test with the run's inference updated by it, and saved as the row ``"<base>, inference <key=value,...>"`` with
``same_run_as: <base>``: the rows ``recipes.py --also-infer`` writes when it runs right after training. The base row's
training fields (time, matmul rate, commit, command) are kept; ``rescore_commit`` and ``rescore_gflops`` record this
run. Test is reported, never used to choose: compare inference settings on val.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import torch
import yaml
from machine import matmul_gflops  # benchmarks/machine.py
from recipes import DATA_ROOT, REPO, git_commit, rescored_row, save_row

from vitdense.cli.entry import main as vitdense_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True, help="a domain of benchmarks/domains.py (its domain.json)")
    parser.add_argument("--run", type=Path, required=True, help="recipes.py run folder with recipe.yaml, final.pt")
    parser.add_argument("--base", required=True, help="the results row the kept weights produced")
    parser.add_argument("--infer", action="append", required=True, type=json.loads, metavar="JSON")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--results", type=Path, default=None, help="default: benchmarks/results/recipes/<domain>")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.results or REPO / "benchmarks" / "results" / "recipes" / args.domain
    meta = json.loads((args.data_root / args.domain / "domain.json").read_text())
    rows = json.loads((out / "results.json").read_text())
    if args.base not in rows:
        raise SystemExit(f"no row '{args.base}' in '{out / 'results.json'}': pass the row the weights produced.")
    weights = args.run / "final.pt"
    if not weights.is_file():
        raise SystemExit(f"'{weights}' not found: pass a recipes.py --keep-weights run folder as --run.")
    recipe = yaml.safe_load((args.run / "recipe.yaml").read_text())
    recipe["trainer"].pop("callbacks", None)  # recipes.py's Timer: nothing is trained here
    # a new folder for what the CLI saves (its config.yaml): the training run's own is never overwritten
    recipe["trainer"]["default_root_dir"] = tempfile.mkdtemp(prefix="rescore-", dir=args.run)
    config = Path(recipe["trainer"]["default_root_dir"]) / "rescore.yaml"
    config.write_text(yaml.safe_dump(recipe, sort_keys=False))
    warnings.filterwarnings("ignore", "LightningCLI's args parameter")
    cli = vitdense_main(["--config", str(config)], run=False)
    cli.model.load_state_dict(torch.load(weights, map_location="cpu"))
    trained_with = dict(cli.model.inference_cfg)
    class_names = meta["classes"]
    args.root = args.data_root / args.domain  # what recipes.test_scores reads
    commit, gflops = git_commit(), matmul_gflops()
    for inference in args.infer:
        row = {**rescored_row(args, cli, rows[args.base], trained_with, inference, class_names),
               "rescore_commit": commit, "rescore_gflops": gflops}  # fmt: skip
        save_row(out, row, class_names, meta)
        print(f"{row['name']}: val {row['mIoU']:.3f}, test {row.get('test_mIoU') or float('nan'):.3f}")


if __name__ == "__main__":
    main()
