"""The shipped notebooks run as shipped (from the repository root, with no checkpoint: a random model)."""

from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["evaluate_segmentation.ipynb"])
def test_notebook_runs(name: str, tmp_path: Path, monkeypatch) -> None:
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    # A fresh working folder holding only the configs: no runs/, so the notebook takes its no-checkpoint path.
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "mIoU" in outputs and "background" in outputs
