"""Two "nodes" on localhost: two torchrun launches (--nnodes 2 --node_rank 0/1, one process each) of the real CLI
with --trainer.num_nodes 2 train one model together, and its logged val metrics equal a one-process validate of the
checkpoint (each val image counted once across the nodes)."""

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.tiny import PATCH8_VIT_D2
from vitdense.cli.entry import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two launches of the CLI: ~30 s
def test_two_nodes_by_torchrun_log_the_metrics_of_one_process(tmp_path: Path) -> None:
    cfg = {"model": {"class_path": "SegmentationTask",
                     "init_args": {"backbone": PATCH8_VIT_D2, "head": {"channels": 16, "aux_channels": 8}}},
           "data": {"class_path": "SyntheticSegmentationDataModule",
                    "init_args": {"num_train": 8, "num_val": 5, "image_size": 32, "batch_size": 2}},
           "trainer": {"accelerator": "cpu", "devices": 1, "num_nodes": 2, "strategy": "ddp", "max_epochs": 1,
                       "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                       "default_root_dir": str(tmp_path / "runs")},
           "seed_everything": 0}  # fmt: skip
    config = tmp_path / "two_nodes.yaml"
    config.write_text(yaml.safe_dump(cfg))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    launches = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                          "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
                          "-m", "vitdense", "fit", "--config", str(config)],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=300)[0] for p in launches]
    assert [p.returncode for p in launches] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    (run,) = (tmp_path / "runs" / "two_nodes").iterdir()
    (ckpt,) = (run / "checkpoints").glob("last.ckpt")
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    logged = {k: float(v) for row in rows for k, v in row.items() if k.startswith("val/") and v}
    single = main(["validate", "--config", str(config), "--ckpt_path", str(ckpt), "--trainer.num_nodes", "1",
                   "--trainer.strategy", "auto", "--trainer.logger", "false",
                   "--trainer.default_root_dir", str(tmp_path / "single")])  # fmt: skip
    for key in ("val/mIoU", "val/pixel_acc", "val/loss"):
        assert logged[key] == pytest.approx(single.trainer.callback_metrics[key].item(), abs=1e-4), key
