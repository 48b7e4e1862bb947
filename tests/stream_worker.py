"""A 2-process DDP fit over a LitData stream that records, per process, the sample indices of every training and
validation batch. Usage: ``python stream_worker.py OUT_DIR STREAM_DIR``; Lightning starts the second process by
running this script again."""

import json
import sys
from pathlib import Path

from lightning.pytorch import Callback, Trainer

from vitdense import SegmentationTask
from vitdense.data.datamodules.streaming import StreamingSegmentationDataModule


class Seen(Callback):
    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {"train": [], "val": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen["train"] += list(batch["index"])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.seen["val"] += list(batch["index"])


def main(out: Path, stream: str) -> None:
    seen = Seen()
    data = StreamingSegmentationDataModule(stream, crop_size=32, batch_size=2)
    backbone = {"name": "vit_tiny_patch16_224", "model_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2}}
    task = SegmentationTask(backbone=backbone, num_classes=data.num_classes, img_size=32, head={"channels": 8})
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, callbacks=[seen])  # fmt: skip
    trainer.fit(task, data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps({**seen.seen, "metrics": metrics}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
