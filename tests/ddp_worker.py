"""Runs several vitdense configs in one DDP launch and saves every rank's backbone before and after fitting, then
predicts from the checkpoint through the real CLI (`predict`).

Usage: ``python ddp_worker.py OUT_DIR CONFIG...``. Lightning starts the second process by running this script
again; both processes then go through the same configs, sharing one process group.
"""

import sys
import time
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from vitdense.cli.entry import PredictionWriter, end_processes_at_exit, main
from vitdense.tasks.sharding import units


def backbone_state(cli) -> dict[str, torch.Tensor]:
    state = cli.model.backbone.state_dict()  # FSDP: each process's shards, gathered whole
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone() for k, v in state.items()}


def run(out: Path, configs: list[str]) -> None:
    for cfg in configs:
        cli = main(["--config", cfg], run=False)
        before = backbone_state(cli)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        end_processes_at_exit(cli.trainer)  # as `vitdense fit` does
        sharded = bool(units(cli.model))
        # what each process holds of the parameters, and each optimizer group's base lr and (global) size
        held = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in cli.model.parameters())
        optimizer = cli.trainer.optimizers[0]
        groups = [(g["initial_lr"], sum(p.numel() for p in g["params"])) for g in optimizer.param_groups]
        after = backbone_state(cli)  # before validate, whose set-up may copy rank 0's weights to every rank
        validated = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
        val_items = len(list(cli.trainer.val_dataloaders.sampler))
        rank, name = cli.trainer.global_rank, Path(cfg).stem
        tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0] if "fsdp" in name else None
        cli.trainer.save_checkpoint(out / f"{name}.ckpt")  # every rank calls it, rank 0 writes
        # a launched process starts seconds after the first: its clock would name another folder. Once is enough (the
        # same PredictionWriter names and broadcasts every task's folder): each sleep holds both processes 1.1 s
        if rank == 1 and cfg == configs[0]:
            time.sleep(1.1)
        predicted = main(["predict", "--config", cfg, "--ckpt_path", str(out / f"{name}.ckpt"),
                          "--trainer.default_root_dir", str(out / "predict" / name)])  # fmt: skip
        (writer,) = [cb for cb in predicted.trainer.callbacks if isinstance(cb, PredictionWriter)]
        torch.save({"before": before, "after": after, "validated": validated, "tested": tested, "sharded": sharded,
                    "held": held, "numel": sum(p.numel() for p in cli.model.parameters()), "groups": groups,
                    "log_dir": cli.trainer.log_dir, "val_items": val_items,
                    "predict_dir": str(writer.output_dir), "predict_count": writer.count},
                   out / f"{name}.rank{rank}.pt")  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(1)  # two processes on two cores
    run(Path(sys.argv[1]), sys.argv[2:])
