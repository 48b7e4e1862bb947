"""FSDP2 (PyTorch's ``fully_shard``) for every vitdense task, under Lightning's ``ModelParallelStrategy``.

Each transformer block is a unit of its own, and so is every module the task calls (backbone, neck, heads or
detector): a unit's parameters are gathered when it runs and sharded again after it. Evaluation (validate, test,
predict) gathers every unit once, before its first batch, and keeps it whole until the end: vitdense hands each
evaluated image to exactly one process, so processes run different numbers of forwards, and a gather per forward
would wait forever for a process that has none left. It also gives every process rank 0's buffers (BatchNorm
statistics), which the checkpoint holds.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard


def shard(task: nn.Module, mesh: Any) -> None:
    """Shard ``task`` over the data-parallel dimension of Lightning's device mesh (once: Lightning calls
    ``configure_model`` at the start of every fit, validate, test and predict)."""
    if units(task):
        return
    if "tensor_parallel" in (mesh.mesh_dim_names or ()) and mesh["tensor_parallel"].size() > 1:
        raise ValueError(
            f"vitdense shards with FSDP only (no tensor parallelism), but the ModelParallelStrategy's "
            f"tensor_parallel_size is {mesh['tensor_parallel'].size()}: set trainer.strategy.init_args "
            "data_parallel_size to the number of processes and tensor_parallel_size to 1."
        )
    data_parallel = mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
    timm_model = getattr(getattr(task, "backbone", None), "model", None)
    for name, module in timm_model.named_modules() if timm_model is not None else ():
        parent, _, index = name.rpartition(".")
        if index.isdigit() and parent.rpartition(".")[2] == "blocks":  # timm: blocks.3 (ViT), layers.1.blocks.0 (Swin)
            fully_shard(module, mesh=data_parallel)
    for name, child in task.named_children():
        if name != "metrics" and any(True for _ in child.parameters()):
            fully_shard(child, mesh=data_parallel)


def units(task: nn.Module) -> list[FSDPModule]:
    """The task's FSDP units (none when it is not sharded)."""
    return [m for m in task.modules() if isinstance(m, FSDPModule)]


def gather(task: nn.Module) -> None:
    """Before evaluating: every unit whole, and kept whole after each forward; buffers (BatchNorm statistics) made
    rank 0's, which the checkpoint holds. FSDP shards parameters only: each process updated its own statistics from
    its own batches, where DDP would have copied rank 0's before every forward."""
    if not units(task):
        return
    with torch.no_grad():
        for name, buffer in task.named_buffers():
            if not name.startswith("metrics."):
                dist.broadcast(buffer, src=0)
    for unit in units(task):
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()


def release(task: nn.Module) -> None:
    """After evaluating: every unit sharded again, and again after each forward."""
    for unit in units(task):
        unit.reshard()
        unit.set_reshard_after_forward(True, recurse=False)
