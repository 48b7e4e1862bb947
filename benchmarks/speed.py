"""Training-step speed of UPerNet segmentation: vitdense against a hand-written loop and two peer libraries.

    python benchmarks/speed.py                                      # CPU sizes (224x224, batch 2), fp32
    python benchmarks/speed.py --device cuda --precision bf16-mixed # 512x512, batch 8
    python benchmarks/speed.py --device cuda --precision bf16-mixed --variants compile channels_last

Cases, each in its own process (so peak memory is its own), on the same random batch, classes, head width and
input size, all with AdamW:

  a  vitdense SegmentationTask(swin_tiny) trained by a Lightning Trainer (what `vitdense fit` runs)
  b  the same module in a hand-written loop (forward_train, the same loss, backward, the same optimizer)
  c  HF transformers UperNetForSemanticSegmentation with a Swin-T backbone (its own CE + 0.4 x auxiliary FCN loss)
  d  segmentation_models_pytorch UPerNet on timm's Swin-T encoder (CE only: smp's UPerNet has no FCN auxiliary head)
  vit_a / vit_b  a and b with a ViT-B/16 backbone
  a+compile, a+channels_last  a with that task option (--variants)

Step time is the wall time of whole iterations after --warmup steps (data loader, host-to-device copy, forward,
backward, optimizer and, for a, Lightning's loop), synchronised on CUDA. FLOPs per step come from
torch.utils.flop_counter on one eager step of each model; MFU = FLOPs / step time / the matmul peak measured in the
same run (fp32 on CPU, bf16 on CUDA at --precision bf16-mixed). Peak memory: CUDA max allocated, or the process's
peak RSS on CPU. Prints a table and the ratios a/b, a/c, a/d (< 1 = vitdense faster) and writes JSON (--out).
With --repeats N (default 3 on CPU, where one step time moves up to ~10% from one process to the next, and 1 on
CUDA) the cases run N times, interleaved (a b c d ... a b c d ...), and each row is the median run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
SWIN, VIT = "swin_tiny_patch4_window7_224", "vit_base_patch16_224"
CASES = ("a", "b", "c", "d", "vit_a", "vit_b")
VARIANTS = ("compile", "channels_last")
IGNORE = 255
DEFAULTS = {  # device -> (size, batch, steps, warmup)
    "cpu": (224, 2, 8, 3),
    "cuda": (512, 8, 30, 10),
}


class RepeatedBatch(Dataset):
    """``length`` copies of one random sample: every case trains on the same data through a DataLoader."""

    def __init__(self, size: int, classes: int, length: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.image = torch.rand(3, size, size, generator=gen)
        self.mask = torch.randint(0, classes, (size, size), generator=gen)
        self.mask[: size // 8] = IGNORE  # a void band, as real masks have
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.image, "mask": self.mask}


def matmul_peak(device: str, precision: str) -> float:
    """Measured matmul rate in FLOP/s: fp32 1024^2 on CPU, 8192^2 in the training dtype on CUDA."""
    n, dtype = (1024, torch.float32) if device == "cpu" else (8192, _dtype(precision))
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    repeats = 8 if device == "cpu" else 50
    for _ in range(2):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def _dtype(precision: str) -> torch.dtype:
    return torch.bfloat16 if precision.startswith("bf16") else torch.float16 if precision.startswith("16") else None


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _autocast(args: argparse.Namespace):
    dtype = _dtype(args.precision)
    return torch.autocast(args.device, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def build_task(args: argparse.Namespace, backbone: str, **options: Any):
    from vitdense import SegmentationTask

    head = {"channels": args.channels, "aux_channels": args.channels // 2, "dropout": 0.1}
    return SegmentationTask(backbone={"name": backbone, "pretrained": False, "img_size": args.size},
                            num_classes=args.classes, head=head, optimizer={"lr": 1e-4}, **options)  # fmt: skip


def build_peer(args: argparse.Namespace, case: str) -> torch.nn.Module:
    if case == "c":
        from transformers import SwinConfig, UperNetConfig, UperNetForSemanticSegmentation

        swin = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                          out_features=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip
        config = UperNetConfig(
            backbone_config=swin, hidden_size=args.channels, auxiliary_in_channels=384,
            auxiliary_channels=args.channels // 2, use_auxiliary_head=True, auxiliary_loss_weight=0.4,
            num_labels=args.classes, loss_ignore_index=IGNORE,
        )  # fmt: skip
        return UperNetForSemanticSegmentation(config)
    import segmentation_models_pytorch as smp

    return smp.UPerNet(encoder_name=f"tu-{SWIN}", encoder_weights=None, classes=args.classes,
                       decoder_channels=args.channels, img_size=args.size)  # fmt: skip


def peer_loss(case: str, model: torch.nn.Module, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if case == "c":
        return model(pixel_values=image, labels=mask).loss
    return F.cross_entropy(model(image), mask, ignore_index=IGNORE)


def count_flops(step) -> float:
    """FLOPs of one call of ``step`` (forward and backward) by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def run_case(args: argparse.Namespace) -> dict[str, Any]:
    """Time one case in this process; return its results row."""
    case, variant = args.case.split("+") if "+" in args.case else (args.case, None)
    torch.manual_seed(0)
    device = torch.device(args.device)
    total = args.warmup + args.steps
    data = RepeatedBatch(args.size, args.classes, total * args.batch)
    loader = DataLoader(data, batch_size=args.batch, pin_memory=args.device == "cuda")
    backbone = VIT if case.startswith("vit") else SWIN
    times: list[float] = []
    profile = None
    if case in ("a", "vit_a"):
        import lightning.pytorch as L

        task = build_task(args, backbone, **({variant: True} if variant else {}))
        flops = _task_flops(args, task)
        params = sum(p.numel() for p in task.parameters())

        class StepTimer(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                _sync(args.device)
                times.append(time.perf_counter())

        trainer = L.Trainer(accelerator=args.device, devices=1, precision=args.precision, max_steps=total,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                            callbacks=[StepTimer()])  # fmt: skip
        _sync(args.device)
        start = time.perf_counter()
        trainer.fit(task, train_dataloaders=loader)
    else:
        if case in ("b", "vit_b"):
            model = build_task(args, backbone).to(device)
            model.train()
            optimizer = model.configure_optimizers()["optimizer"]

            def loss_fn(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                logits, aux = model.forward_train(image)
                return model.compute_loss(logits, mask, ohem=True) + 0.4 * model.compute_loss(aux, mask)

            flops = _task_flops(args, model)
        else:
            model = build_peer(args, case).to(device)
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=args.device == "cuda")

            def loss_fn(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                return peer_loss(case, model, image, mask)

            flops = _flops_of(args, loss_fn)
        params = sum(p.numel() for p in model.parameters())

        def train_step(batch: dict[str, torch.Tensor]) -> None:
            image = batch["image"].to(device, non_blocking=True)
            mask = batch["mask"].to(device, non_blocking=True)
            with _autocast(args):
                loss = loss_fn(image, mask)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        _sync(args.device)
        start = time.perf_counter()
        for batch in loader:
            train_step(batch)
            _sync(args.device)
            times.append(time.perf_counter())
        if args.profile:
            profile = _profile(args, train_step, next(iter(loader)))
    if len(times) != total:
        raise SystemExit(f"case {args.case}: expected {total} steps, timed {len(times)}")
    step_s = (times[-1] - times[args.warmup - 1]) / args.steps
    memory = (
        torch.cuda.max_memory_allocated() / 2**20
        if args.device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {"case": args.case, "step_s": step_s, "img_per_s": args.batch / step_s, "flops_per_step": flops,
            "params_M": params / 1e6, "peak_memory_MiB": memory,
            "first_steps_s": times[args.warmup - 1] - start, "profile": profile}  # fmt: skip


def _profile(args: argparse.Namespace, train_step, batch: dict[str, torch.Tensor]) -> str:
    """The operators that take the most time over three steps, as torch.profiler's table."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            train_step(batch)
        _sync(args.device)
    sort = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=60)


def _batch(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    data = RepeatedBatch(args.size, args.classes, 1)
    image = data.image.expand(args.batch, -1, -1, -1).contiguous().to(args.device)
    return image, data.mask.expand(args.batch, -1, -1).contiguous().to(args.device)


def _flops_of(args: argparse.Namespace, loss_fn) -> float:
    image, mask = _batch(args)

    def step() -> None:
        with _autocast(args):
            loss = loss_fn(image, mask)
        loss.backward()

    flops = count_flops(step)
    return flops


def _task_flops(args: argparse.Namespace, task) -> float:
    """One eager forward + backward of the task on this device, then the model is left as it was (on the CPU for a
    Trainer to move)."""
    task.to(args.device)

    def loss_fn(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits, aux = task.forward_train(image)
        return task.compute_loss(logits, mask) + 0.4 * task.compute_loss(aux, mask)

    flops = _flops_of(args, loss_fn)
    task.zero_grad(set_to_none=True)
    return flops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", default=None, help="32 (CPU default) or bf16-mixed (CUDA default)")
    p.add_argument("--size", type=int, help="input side (default 224 on CPU, 512 on CUDA)")
    p.add_argument("--batch", type=int, help="batch size (default 2 on CPU, 8 on CUDA)")
    p.add_argument("--steps", type=int, help="timed steps (default 8 on CPU, 30 on CUDA)")
    p.add_argument("--warmup", type=int, help="untimed first steps (default 3 on CPU, 10 on CUDA)")
    p.add_argument("--repeats", type=int, help="interleaved runs of every case, median kept (default 3 CPU, 1 CUDA)")
    p.add_argument("--classes", type=int, default=150)
    p.add_argument("--channels", type=int, help="UPerNet channels (default 128 on CPU, 512 on CUDA)")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--variants", nargs="*", default=[], choices=VARIANTS, help="extra rows of case a")
    p.add_argument("--profile", action="store_true", help="print the top operators of the hand-written loops")
    p.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's)")
    p.add_argument("--out", type=Path, help="JSON results file (default benchmarks/results/speed/<device>.json)")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = p.parse_args()
    size, batch, steps, warmup = DEFAULTS[args.device]
    args.size, args.batch = args.size or size, args.batch or batch
    args.steps, args.warmup = args.steps or steps, args.warmup or warmup
    args.channels = args.channels or (128 if args.device == "cpu" else 512)
    args.repeats = args.repeats or (3 if args.device == "cpu" else 1)
    args.precision = args.precision or ("32" if args.device == "cpu" else "bf16-mixed")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu" and args.precision != "32":
        warnings.warn("bf16/fp16 on CPU is very slow here; the CPU numbers are meant at 32-bit.", stacklevel=1)
    if args.case:
        warnings.filterwarnings("ignore")
        print("RESULT " + json.dumps(run_case(args)), flush=True)
        return
    peak = matmul_peak(args.device, args.precision)
    settings = {k: getattr(args, k) for k in ("device", "precision", "size", "batch", "steps", "warmup",
                                               "classes", "channels")}  # fmt: skip
    machine = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or 'cpu'}"
    print(f"{machine}, {torch.get_num_threads()} threads; matmul peak measured {peak / 1e12:.3f} TFLOP/s; {settings}")
    cases = [*args.cases, *(f"a+{v}" for v in args.variants)]
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    for repeat in range(args.repeats):
        for case in cases:
            cmd = [sys.executable, __file__, "--case", case]
            cmd += [a for k, v in settings.items() for a in (f"--{k}", str(v))]
            cmd += ["--threads", str(args.threads)] if args.threads else []
            cmd += ["--profile"] if args.profile and repeat == 0 else []
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(f"case {case} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
                runs[case].append({"case": case, "error": proc.stderr[-3000:]})
                continue
            runs[case].append(json.loads(lines[-1][7:]))
            if args.repeats > 1:
                print(f"  run {repeat + 1}/{args.repeats} {case:16s} {runs[case][-1]['step_s'] * 1e3:9.1f} ms/step",
                      flush=True)  # fmt: skip
    rows = []
    for case in cases:
        timed = sorted((r for r in runs[case] if "step_s" in r), key=lambda r: r["step_s"])
        if not timed:
            rows.append(runs[case][-1])
            continue
        row = timed[(len(timed) - 1) // 2]  # the median run (the lower one of an even count)
        row["mfu"] = row["flops_per_step"] / row["step_s"] / peak
        row["step_s_runs"] = [r["step_s"] for r in runs[case] if "step_s" in r]
        rows.append(row)
        if row.get("profile"):
            print(row["profile"], flush=True)
        print(f"  {case:16s} {row['step_s'] * 1e3:9.1f} ms/step {row['img_per_s']:8.2f} img/s "
              f"MFU {row['mfu'] * 100:5.1f}%  {row['flops_per_step'] / 1e9:8.1f} GFLOP/step "
              f"{row['params_M']:6.1f} M params  peak {row['peak_memory_MiB']:8.0f} MiB  "
              f"first {args.warmup} steps {row['first_steps_s']:.1f} s", flush=True)  # fmt: skip
    by = {r["case"]: r for r in rows if "step_s" in r}
    ratios = {f"{x}/{y}": by[x]["step_s"] / by[y]["step_s"]
              for x, y in (("a", "b"), ("a", "c"), ("a", "d"), ("vit_a", "vit_b"),
                           *(("a+" + v, "a") for v in args.variants), *(("a+" + v, "c") for v in args.variants))
              if x in by and y in by}  # fmt: skip
    for name, value in ratios.items():
        print(f"  {name:22s} {value:.3f}")
    out = args.out or REPO / "benchmarks" / "results" / "speed" / f"{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine, "threads": torch.get_num_threads(), "matmul_peak_flops": peak,
              "torch": torch.__version__, "settings": settings, "repeats": args.repeats, "rows": rows, "ratios": ratios,
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
