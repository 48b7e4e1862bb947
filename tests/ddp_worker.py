"""Runs several vitdense configs in one DDP launch and saves every rank's backbone before and after fitting.

Usage: ``python ddp_worker.py OUT_DIR CONFIG...``. Lightning starts the second process by running this script
again; both processes then go through the same configs, sharing one process group.
"""

import sys
from pathlib import Path

import torch

from vitdense.cli import end_processes_at_exit, main


def backbone_state(cli) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cli.model.backbone.state_dict().items()}


def run(out: Path, configs: list[str]) -> None:
    for cfg in configs:
        cli = main(["--config", cfg], run=False)
        before = backbone_state(cli)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        end_processes_at_exit(cli.trainer)  # as `vitdense fit` does
        after = backbone_state(cli)  # before validate, whose set-up may copy rank 0's weights to every rank
        validated = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
        rank, name = cli.trainer.global_rank, Path(cfg).stem
        cli.trainer.save_checkpoint(out / f"{name}.ckpt")  # every rank calls it, rank 0 writes
        torch.save({"before": before, "after": after, "validated": validated,
                    "log_dir": cli.trainer.log_dir, "val_items": len(list(cli.trainer.val_dataloaders.sampler))},
                   out / f"{name}.rank{rank}.pt")  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(1)  # two processes on two cores
    run(Path(sys.argv[1]), sys.argv[2:])
