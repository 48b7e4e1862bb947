"""benchmarks/across_domains.py rebuilds its tables from committed files alone (#31): the rows under
benchmarks/results/recipes/ and the rule's inputs in rule_inputs.json, with no domain built under --data-root."""

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import across_domains as ad

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "recipes"


def test_rebuilds_the_committed_tables_from_committed_inputs_alone(tmp_path: Path) -> None:
    results = tmp_path / "results"  # the committed rows and rule inputs; not the tables, which the run must write
    for path in [RESULTS / "results.json", RESULTS / ad.RULE_INPUTS, *RESULTS.glob("*/results.json")]:
        copy = results / path.relative_to(RESULTS)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
    docs = tmp_path / "recipes.md"
    shutil.copy(ROOT / "docs" / "recipes.md", docs)
    ad.main(["--results", str(results), "--data-root", str(tmp_path / "no_data"), "--docs", str(docs)])
    for name in ("across_domains.md", "across_domains.json", ad.RULE_INPUTS):
        assert (results / name).read_text() == (RESULTS / name).read_text(), name
    assert docs.read_text() == (ROOT / "docs" / "recipes.md").read_text()
    rows = json.loads((results / "across_domains.json").read_text())["table"]
    assert all("class_weights=auto" in by_recipe for by_recipe in rows.values())


def _build(data: Path, domain: str, shares: list[float], commit: str) -> None:
    """A domain.json as benchmarks/domains.py writes it, with only what the rule reads and where it came from."""
    (data / domain).mkdir(parents=True, exist_ok=True)
    info = {"name": domain, "repo": f"github.com/x/{domain}", "commit": commit, "classes": ["soil", "crop"],
            "splits": {"train": {"images": 3, "pixel_shares": shares}}}  # fmt: skip
    (data / domain / "domain.json").write_text(json.dumps(info))


def test_a_built_domain_replaces_its_committed_entry_and_a_domain_with_neither_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, data, empty = tmp_path / "rule_inputs.json", tmp_path / "data", tmp_path / "no_data"
    _build(data, "cwfid", [0.6, 0.4], "a" * 40)
    with pytest.raises(SystemExit, match=r"mtd/domain.json' not found .*python benchmarks/domains.py mtd"):
        ad.load_rule_inputs(inputs, data, ["cwfid", "mtd"])
    assert not inputs.exists()
    assert ad.load_rule_inputs(inputs, data, ["cwfid"])["cwfid"]["source"] == {"repo": "github.com/x/cwfid",
                                                                              "commit": "a" * 40}  # fmt: skip
    assert "cwfid added" in capsys.readouterr().out
    table = {"cwfid": {ad.PEER: {"val": 0.5, "test": 0.5}, "default": {"val": 0.7, "test": 0.6},
                       "class_weights=off": {"val": 0.6, "test": 0.7}}}  # fmt: skip
    committed = ad.load_rule_inputs(inputs, empty, ["cwfid"])  # nothing built: the committed entry
    assert ad.add_rule_rows(table, committed)["cwfid"].startswith("class_weights=off: every class")
    assert table["cwfid"]["class_weights=auto"] == table["cwfid"]["class_weights=off"]

    _build(data, "cwfid", [0.995, 0.005], "b" * 40)  # rebuilt from another commit: crop is now rare
    rebuilt = ad.load_rule_inputs(inputs, data, ["cwfid"])
    assert "cwfid updated" in capsys.readouterr().out
    assert json.loads(inputs.read_text())["domains"] == rebuilt
    assert rebuilt["cwfid"]["source"]["commit"] == "b" * 40 and rebuilt["cwfid"]["pixel_shares"] == [0.995, 0.005]
    assert ad.add_rule_rows(table, ad.load_rule_inputs(inputs, empty, ["cwfid"]))["cwfid"].startswith("default: 1 ")
    assert table["cwfid"]["class_weights=auto"] == table["cwfid"]["default"]


def test_the_field_table_gives_the_shipped_templates_seed_mean_gain_over_each_trainer() -> None:
    def run(test: float) -> dict:
        return {"val": test, "test": test}

    table = {
        "cwfid": {ad.PEER: run(0.6), "template rerun, inference mode=slide,keep_largest=auto": run(0.80),
                  "template rerun, seed=1, inference keep_largest=auto": run(0.70), "template rerun": run(0.5),
                  "template rerun, inference mode=slide": run(0.4),  # not the template as shipped
                  "field: terratorch": run(0.70), "field: terratorch, seed=1": run(0.60), "field: torchgeo": run(0.9)},
        "ph2": {ad.PEER: run(0.9), "template rerun, inference mode=slide,keep_largest=auto": run(0.94),
                "seed=1,class_weights=off, inference mode=slide,keep_largest=auto": run(0.92),
                "field: terratorch": run(0.90)},
        "mtd": {ad.PEER: run(0.2), "template rerun": run(0.3), "field: terratorch": run(0.1)},  # not shipped yet
    }  # fmt: skip
    for rows in table.values():  # as load_rows merges a field trainer's seeds
        ad.merge_peer_seeds(rows, "field: terratorch")
    gains = ad.field_gains(table)
    assert set(gains) == {"field: terratorch", "field: torchgeo"}
    assert gains["field: terratorch"]["cwfid"][1] == pytest.approx(100 * (0.75 - 0.65))  # both sides' seed means
    assert gains["field: terratorch"]["ph2"][1] == pytest.approx(100 * (0.93 - 0.90))  # PH2's seed-1 row name
    assert "mtd" not in gains["field: terratorch"]  # no shipped template row there: no gain claimed
    assert gains["field: torchgeo"]["cwfid"][1] == pytest.approx(-15.0)
    lines = "\n".join(ad.field_lines(table))
    assert "| field: terratorch | 0.650 (+10.0; 2 seeds) |  | 0.900 (+3.0) | +3.0 | 2 of 3 |" in lines
    assert "| field: torchgeo | 0.900 (-15.0) |  |  | -15.0 | 1 of 3 |" in lines
    assert "| template as shipped (by windows) | 0.750 (2 seeds) |  | 0.930 (2 seeds) | | |" in lines
    assert ad.field_lines({"cwfid": {ad.PEER: run(0.6), "template rerun": run(0.7)}}) == []


def test_camvid_keeps_peer_and_field_seeds_and_template_reruns_and_shipped_rows_average_them(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "ccp").mkdir(parents=True)
    shipped0, shipped1 = ad.SHIPPED_ROWS[0][0], "template rerun, seed=1"

    def row(val: float, test: bool = False) -> dict:
        return {"mIoU": val, **({"test_mIoU": val - 0.1} if test else {})}

    camvid = {ad.PEER: row(0.50), f"{ad.PEER}, seed=1": row(0.60), "default": row(0.6), shipped0: row(0.70),
              shipped1: row(0.80), "lovasz_weight=1, seed 1": row(0.9), "field: terratorch": row(0.64),
              "field: terratorch, seed=1": row(0.62)}  # fmt: skip
    ccp = {ad.PEER: row(0.3, True), "default": row(0.4, True), shipped0: row(0.5, True), "lovasz_weight=1, seed 1":
           row(0.5, True), "field: terratorch": row(0.3, True)}  # fmt: skip
    (results / "results.json").write_text(json.dumps(camvid))
    (results / "ccp" / "results.json").write_text(json.dumps(ccp))
    table = ad.load_rows(results)
    assert table["camvid"][ad.PEER] == {"val": pytest.approx(0.55), "test": pytest.approx(0.55), "seeds": 2}
    assert "lovasz_weight=1, seed 1" not in table["camvid"]  # an old ablation: still left out
    assert table["camvid"]["field: terratorch"] == {"val": pytest.approx(0.63), "test": pytest.approx(0.63), "seeds": 2}
    ad.add_shipped_rows(table)
    assert table["camvid"][ad.SHIPPED_MEAN] == {"val": pytest.approx(0.75), "test": pytest.approx(0.75), "seeds": 2}
    assert table["ccp"][ad.SHIPPED_MEAN] == {"val": pytest.approx(0.5), "test": pytest.approx(0.4), "seeds": 1}
    text = ad.markdown(table, {})
    assert f"| {ad.SHIPPED_MEAN} | 0.750 (+20.0; 2 seeds) | 0.400 (+20.0) | +20.0 | +20.0 |" in text
    assert ad.SHIPPED_MEAN not in {r["chosen"] for r in ad.leave_one_out(table)}  # seed means never choose


def test_the_camvid_peer_at_another_seed_runs_the_same_loop_with_that_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    import recipes

    ran: list[list[str]] = []

    class FakePeer:  # what benchmarks/peer_loop.py prints for one eval split
        def __init__(self, cmd: list[str], **_: object) -> None:
            ran.append(cmd)
            self.stdout = iter(["per-class IoU val [0.5, 0.7]\n",
                                "RESULT eval_split=val test_mIoU=0.6 pixel_acc=0.9 train_s=12.0\n"])  # fmt: skip

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(recipes.subprocess, "Popen", FakePeer)
    monkeypatch.setattr(recipes, "git_commit", lambda: "c" * 40)
    monkeypatch.setattr(recipes, "matmul_gflops", lambda: 50.0)
    args = argparse.Namespace(domain=None, seed=1, steps=6, batch=2, crop=32, root=Path("camvid"), threads=1)
    row = recipes.run_peer(args, ["Sky", "Road"])
    assert Path(ran[0][1]) == recipes.DOMAIN_PEER and ran[0][-4:] == ["--eval-split", "val", "--seed", "1"]
    assert row["name"] == f"{recipes.PEER_ROW}, seed=1" and "domain" not in row
    assert row["mIoU"] == 0.6 and row["iou"] == {"Sky": 0.5, "Road": 0.7} and "test_mIoU" not in row
    assert recipes.peer_script(argparse.Namespace(domain=None, seed=0)) == recipes.PEER_SCRIPT  # the shared script
    assert recipes.peer_script(argparse.Namespace(domain="ccp", seed=0)) == recipes.DOMAIN_PEER
