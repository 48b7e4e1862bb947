"""Training memory of one device for a cluster (``vitdense estimate --devices N --strategy ddp|fsdp``): replicated or
sharded weights, gradients and AdamW moments, gathered blocks, and activations with or without checkpointing, from the
blocks and parameter shapes the meta forward of ``vitdense.cost.estimate`` records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass
class BlockCost:
    """One transformer block of the backbone (what activation checkpointing keeps per block: its input)."""

    params: int = 0
    input_bytes: float = 0.0
    train_bytes: float = 0.0
    trainable: bool = True


class StageBytes(Protocol):
    """What ``DeviceMemory`` reads of a stage (``vitdense.cost.estimate.StageCost``)."""

    train_bytes: float


class DeviceMemory:
    """Per-device memory methods of ``vitdense.cost.estimate.Estimate`` (which holds ``blocks``, ``param_shapes``,
    ``params``, ``trainable``, ``batch`` and ``backward_stages``)."""

    # Declared for the type checker; Estimate (a dataclass) defines them.
    batch: int
    blocks: list[BlockCost]
    param_shapes: list[tuple[tuple[int, ...], bool]]

    @property
    def params(self) -> int:
        raise NotImplementedError

    @property
    def trainable(self) -> int:
        raise NotImplementedError

    def backward_stages(self) -> Sequence[StageBytes]:
        raise NotImplementedError

    def activation_bytes(self, checkpointing: bool = False) -> float:
        """Training activations per image in the stages the backward reaches; with checkpointing per block, each
        trained block keeps only its input, and one block at a time is recomputed in full during the backward."""
        total = sum(s.train_bytes for s in self.backward_stages())
        trained = [b for b in self.blocks if b.trainable]
        if not checkpointing or not trained:
            return total
        inside = sum(b.train_bytes for b in trained)
        return total - inside + sum(b.input_bytes for b in trained) + max(b.train_bytes for b in trained)

    def sharded_params(self, devices: int, trainable_only: bool = False) -> int:
        """Parameters one device holds when each is split along its first dimension into ``devices`` equal, padded
        shards (FSDP2's ``fully_shard``)."""
        total = 0
        for shape, trainable in self.param_shapes:
            if trainable_only and not trainable:
                continue
            rest = 1
            for d in shape[1:]:
                rest *= d
            total += -(-shape[0] // devices) * rest if shape else 1
        return total

    def device_memory(self, devices: int = 1, strategy: str = "ddp", checkpointing: bool = False,
                      activation_bytes: int = 4) -> dict[str, float]:  # fmt: skip
        """Training memory of one device in bytes: fp32 weights (4 per parameter), gradients (4 per trained one),
        AdamW moments (8 per trained one) and activations of ``batch`` images at ``activation_bytes`` per value.
        ``ddp`` replicates the model; ``fsdp`` shards weights, gradients and moments (``sharded_params``) and
        gathers one block at a time for compute (two: the next is prefetched)."""
        if strategy not in ("ddp", "fsdp"):
            raise ValueError(f"strategy: {strategy!r} is not one of 'ddp', 'fsdp'.")
        if strategy == "fsdp":
            params, trainable = self.sharded_params(devices), self.sharded_params(devices, trainable_only=True)
            gathered = 2 * 4 * max((b.params for b in self.blocks), default=0)
        else:
            params, trainable, gathered = self.params, self.trainable, 0
        activations = self.activation_bytes(checkpointing) * self.batch * activation_bytes / 4
        out = {"weights": 4.0 * params, "gradients": 4.0 * trainable, "optimizer": 8.0 * trainable,
               "gathered": float(gathered), "activations": activations}  # fmt: skip
        out["total"] = sum(out.values())
        return out

    def device_table(self, devices: int, strategy: str, checkpointing: bool, activation_bytes: int = 4,
                     gpu_gib: float | None = None, margin: float = 0.1) -> str:  # fmt: skip
        """The per-device training memory as text, and whether it fits a ``gpu_gib`` GPU with ``margin`` to spare."""
        mem, gib = self.device_memory(devices, strategy, checkpointing, activation_bytes), 2**30
        lines = [
            f"per device, {devices} x {strategy}, batch {self.batch} per device, activation checkpointing "
            f"{'on' if checkpointing else 'off'}, activations at {activation_bytes} bytes per value:",
            f"  weights {mem['weights'] / gib:.2f} GiB + gradients {mem['gradients'] / gib:.2f} + AdamW moments "
            f"{mem['optimizer'] / gib:.2f}" + (" (sharded)" if strategy == "fsdp" else "")
            + (f" + gathered blocks {mem['gathered'] / gib:.2f}" if mem["gathered"] else "")
            + f" + activations {mem['activations'] / gib:.2f} = {mem['total'] / gib:.2f} GiB",
        ]  # fmt: skip
        if gpu_gib is not None:
            fits = mem["total"] <= (1 - margin) * gpu_gib * gib
            lines.append(f"  {'fits' if fits else 'does not fit'} a {gpu_gib:g} GiB GPU with {margin:.0%} to spare "
                         "(framework and allocator overheads are not counted)")  # fmt: skip
        return "\n".join(lines)
