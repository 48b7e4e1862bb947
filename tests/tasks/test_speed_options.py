"""Task options for speed: compile and channels_last change how the model runs, never what it computes or saves."""

import lightning.pytorch as L
import pytest
import torch
from torch.utils.data import DataLoader

from tests.tiny import VIT_D2_W32
from vitdense import ClassificationTask, DetectionTask, SegmentationTask


def seg_task(**options) -> SegmentationTask:
    torch.manual_seed(0)
    return SegmentationTask(backbone=VIT_D2_W32, num_classes=3, pretrained=False, img_size=64,
                            head={"channels": 8, "aux_channels": 8}, **options)  # fmt: skip


def test_compile_compiles_the_hot_path_in_place_and_keeps_parameter_names() -> None:
    plain, compiled = seg_task(), seg_task(compile=True)
    compiled.setup("fit")
    targets = compiled.compile_targets()
    assert {type(m).__name__ for m in targets} == {"Backbone", "MultiLevelNeck", "UPerHead", "FCNHead"}
    assert all(m._compiled_call_impl is not None for m in targets)
    assert compiled.state_dict().keys() == plain.state_dict().keys()  # checkpoints load either way
    assert compiled.example_input_array is None  # the summary would compile a graph just for its FLOPs
    det = DetectionTask(backbone=VIT_D2_W32, num_classes=2, pretrained=False, img_size=64, head={"channels": 8},
                        compile=True)  # fmt: skip
    det.setup("fit")
    assert [type(m).__name__ for m in det.compile_targets()] == ["Backbone", "SimpleFeaturePyramid"]
    cls = ClassificationTask(backbone=VIT_D2_W32, num_classes=2, pretrained=False, img_size=64, compile=True)
    cls.setup("fit")
    assert all(m._compiled_call_impl is not None for m in cls.compile_targets())


def test_channels_last_gives_the_same_training_step() -> None:
    images, masks = torch.rand(4, 3, 64, 64), torch.randint(0, 3, (4, 64, 64))
    batches = [{"image": images[i : i + 2], "mask": masks[i : i + 2]} for i in (0, 2)]
    results = {}
    for layout in (False, True):
        task = seg_task(channels_last=layout, optimizer={"lr": 1e-3})
        trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
        trainer.fit(task, train_dataloaders=DataLoader(batches, batch_size=None))
        conv = task.decode_head.fpn_bottleneck.conv.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == layout
        assert task.backbone.normalize(images).is_contiguous(memory_format=torch.channels_last) == layout
        task.eval()
        results[layout] = task(images)
    torch.testing.assert_close(results[True], results[False], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_compiled_task_computes_what_the_eager_one_does() -> None:
    images = torch.rand(2, 3, 64, 64)
    logits = {}
    for compile in (False, True):
        task = seg_task(compile=compile)
        task.setup("fit")
        task.eval()
        logits[compile] = task(images)
    torch.testing.assert_close(logits[True], logits[False], rtol=1e-4, atol=1e-4)
