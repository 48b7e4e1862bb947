"""The largest per-device training batch of a config that fits, with a margin (``vitdense tune --batch_size``).

On CUDA it is measured: a training step (forward, backward, optimizer step, under the trainer's precision) at the
training crop, on batches of one training item repeated, doubling from 1 until a step runs out of memory or its
peak allocation exceeds ``(1 - margin)`` of the device's memory, then bisecting between the last that fit and the
first that did not. Weights do not change memory, so the model is built without loading pretrained weights.

On CPU nothing is tried (a step that does not fit would swap the machine, not fail): the answer is memory-bound,
from ``vitdense.cost.estimate``'s per-image training activations and the weights, gradients and AdamW moments, against
``(1 - margin)`` of the memory available now (``MemAvailable``). The estimate leaves out norms, activation functions
and allocator overhead, so it is an upper bound; the margin is for that too.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch

BATCH_FILE = "batch_size.json"


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (Linux ``MemAvailable``; else the physical total)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_bound_batch(task: Any, size: tuple[int, int], margin: float, available: int) -> dict[str, Any]:
    """The largest batch whose estimated training memory fits ``(1 - margin) x available`` bytes."""
    from vitdense.cost.estimate import estimate

    cost = estimate(task, size, 1)
    per_image = sum(s.train_bytes for s in cost.backward_stages())
    fixed = 4 * cost.params + 12 * cost.trainable
    budget = available * (1 - margin)
    batch = max(0, math.floor((budget - fixed) / per_image)) if per_image > 0 else 0
    return {"method": "memory bound (vitdense estimate)", "device": "cpu", "batch_size": batch,
            "input_size": list(size), "activation_mib_per_image": round(per_image / 2**20, 2),
            "fixed_mib": round(fixed / 2**20, 1), "available_mib": round(available / 2**20),
            "margin": margin}  # fmt: skip


def _autocast(precision: str) -> Any:
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else torch.autocast("cuda", enabled=False)


def measured_batch(task: Any, datamodule: Any, precision: str, margin: float, limit: int = 4096) -> dict[str, Any]:
    """The largest batch whose training step fits ``(1 - margin)`` of the CUDA device's memory, by trying."""
    device = torch.device("cuda", torch.cuda.current_device())
    task.to(device).train()
    optimizer = task.configure_optimizers()["optimizer"]
    datamodule.setup("fit")
    item = datamodule.dataset("train")[0]
    collate = datamodule.get_collate_fn("train") or torch.utils.data.default_collate
    total = torch.cuda.get_device_properties(device).total_memory
    budget = total * (1 - margin)
    peaks: dict[int, float] = {}

    def fits(batch: int) -> bool:
        data = collate([item] * batch)
        data = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in data.items()}
        if isinstance(data.get("image"), list):
            data["image"] = [im.to(device) for im in data["image"]]
        if "target" in data:
            data["target"] = [{k: v.to(device) for k, v in t.items()} for t in data["target"]]
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            with _autocast(precision), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # self.log without a Trainer
                loss = task.training_step(data, 0)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
        except torch.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            return False
        peaks[batch] = torch.cuda.max_memory_allocated(device)
        return peaks[batch] <= budget

    good, bad = 0, None
    batch = 1
    while batch <= limit:
        if not fits(batch):
            bad = batch
            break
        good, batch = batch, batch * 2
    if bad is not None:
        while bad - good > 1:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if fits(mid) else (good, mid)
    return {"method": "measured (training steps)", "device": torch.cuda.get_device_name(device), "batch_size": good,
            "precision": str(precision), "total_mib": round(total / 2**20), "margin": margin,
            "peak_mib": {str(b): round(p / 2**20, 1) for b, p in sorted(peaks.items())},
            "limit": limit if bad is None else None}  # fmt: skip


def find_batch_size(cli: Any, margin: float, output: Path) -> str:
    """Find the batch size for the CLI's model, data and trainer; write ``batch_size.json``; return the report."""
    from vitdense.cost.estimate import input_size

    if not 0 <= margin < 1:
        raise ValueError(f"--margin {margin}: give the fraction of memory to leave free, in [0, 1).")
    task, datamodule, trainer = cli.model, cli.datamodule, cli.trainer
    size = input_size(datamodule, task)
    if trainer.strategy.root_device.type == "cuda":
        result = measured_batch(task, datamodule, trainer.precision, margin)
    else:
        result = memory_bound_batch(task, size, margin, available_memory())
    configured = getattr(datamodule, "batch_size", None)
    result["configured_batch_size"] = configured
    output.mkdir(parents=True, exist_ok=True)
    path = output / BATCH_FILE
    path.write_text(json.dumps(result, indent=2) + "\n")
    if result["device"] == "cpu":
        how = (f"memory-bound on CPU at {size[0]}x{size[1]}: {result['activation_mib_per_image']:.1f} MiB of "
               f"activations per image + {result['fixed_mib']:.0f} MiB of weights, gradients and AdamW moments, in "
               f"{1 - margin:.0%} of {result['available_mib']} MiB available; estimated, not run)")  # fmt: skip
    else:
        how = (f"measured on {result['device']} ({result['precision']}): the largest training step within "
               f"{1 - margin:.0%} of {result['total_mib']} MiB")  # fmt: skip
    lines = [f"batch size: {result['batch_size']} per device ({how}); the config has {configured}",
             f"suggested: data.init_args.batch_size: {result['batch_size']}   (scale optimizer.lr with the batch, or "
             "run vitdense tune again at the new batch)",
             f"wrote {path}"]  # fmt: skip
    if result["batch_size"] == 0:
        lines[0] += " -- not even one image fits: reduce the crop, use grad_checkpointing: true or a smaller backbone"
    return "\n".join(lines)
