"""The shipped notebooks run as shipped: from a folder holding a config and a run of it, each finds the run's newest
checkpoint itself (CHECKPOINT = None) and evaluates it through vitdense.evaluate."""

from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {
    "segmentation": ("evaluate_segmentation.ipynb", ["mIoU", "background", "IoU"]),
    "classification": ("evaluate_classification.ipynb", ["val/acc", "precision", "misclassified"]),
    "detection": ("evaluate_detection.ipynb", ["val/mAP", "AP50", "threshold"]),
}


@pytest.mark.parametrize(
    "kind", [k if k == "segmentation" else pytest.param(k, marks=pytest.mark.slow) for k in sorted(NOTEBOOKS)]
)  # the default suite runs one notebook (each ~10-25 s on 2 cores)
def test_notebook_runs(kind: str, tmp_path: Path, monkeypatch, tiny_run) -> None:
    name, expected = NOTEBOOKS[kind]
    config, ckpt = tiny_run(tmp_path, kind)
    assert config.relative_to(tmp_path) == Path("configs", f"{kind}.yaml")
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert "CHECKPOINT = None" in params.source  # as shipped: the notebook looks for the newest run itself
    params.source = params.source.replace(
        f'CONFIG = "{_shipped_config(params.source)}"', f'CONFIG = "configs/{kind}.yaml"'
    )
    params.source = params.source.replace("NUM_EXAMPLES = 5", "NUM_EXAMPLES = 1")  # one row of the examples figure
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"evaluating {Path('runs') / ckpt.relative_to(tmp_path / 'runs')}" in outputs
    for text in expected:
        assert text in outputs
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 3  # every plot cell drew


def _shipped_config(source: str) -> str:
    line = next(ln for ln in source.splitlines() if ln.startswith("CONFIG = "))
    return line.split('"')[1]
