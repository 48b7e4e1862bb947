"""A problem with the user's files ends every subcommand the same way: `error: ...` naming the file and the value as
the last line, exit code 2, no traceback (`VITDENSE_DEBUG=1` raises it instead): fit (also from a DataLoader worker
process), validate, test, predict, data, scene and stream. Run in-process through the command line's own exit path."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.cli.test_cli_messages import BACKBONE
from tests.fake_data import write_folder_dataset
from vitdense.cli.entry import main
from vitdense.engine.messages import data_message


def write_config(tmp_path: Path, root: Path, **data) -> Path:
    init_args = {"root": str(root), "crop_size": 32, "batch_size": 2, **data}
    cfg = {
        "model": {"class_path": "SegmentationTask", "init_args": {"backbone": BACKBONE, "head": {"channels": 8}}},
        "data": {"class_path": "SegmentationFolderDataModule", "init_args": init_args},
        "trainer": {"accelerator": "cpu", "fast_dev_run": True, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(tmp_path / "runs")},
    }  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def out_of_range(root: Path) -> tuple[list[str], str]:
    """A training mask with class id 7 of 3 classes: found when the mask is loaded (in a DataLoader worker here)."""
    mask = np.asarray(Image.open(root / "train" / "masks" / "1.png")).copy()
    mask[3, 3] = 7
    Image.fromarray(mask).save(root / "train" / "masks" / "1.png")
    return ["--data.num_workers", "1"], f"Mask '{root / 'train' / 'masks' / '1.png'}' has values [7] outside"


def unreadable(split: str):
    def corrupt(root: Path) -> tuple[list[str], str]:
        path = root / split / "masks" / "0.png"
        path.write_bytes(b"not a png")
        return [], f"Cannot read image '{path}'"

    return corrupt


def no_test_split(root: Path) -> tuple[list[str], str]:
    for path in sorted((root / "test").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "test").rmdir()
    return [], f"Split folder '{root / 'test'}' not found"


def no_predict_dir(root: Path) -> tuple[list[str], str]:
    return ["--data.predict_dir", str(root / "photos")], f"Image folder '{root / 'photos'}' does not exist"


def too_few_classes(root: Path) -> tuple[list[str], str]:
    return ["--data.num_classes", "2"], f"'{root / 'classes.txt'}' lists 3 classes but num_classes=2"


def five_bands(root: Path) -> tuple[list[str], str]:
    from vitdense import SegmentationTask
    from vitdense.deploy.export import export_safetensors

    task = SegmentationTask(backbone={**BACKBONE, "img_size": 32}, num_classes=3, head={"channels": 8})
    model = export_safetensors(task, root.parent / "model.safetensors")
    np.save(root.parent / "scene.npy", np.zeros((40, 40, 5), np.uint8))
    args = ["--model", str(model), "--input", str(root.parent / "scene.npy"), "--output", str(root.parent / "maps")]
    return args, f"'{root.parent / 'scene.npy'}' gives 5 band(s) (bands: [0, 1, 2, 3, 4]) but the model takes"


CASES = {
    "fit": (out_of_range, True),
    "validate": (unreadable("val"), True),
    "test": (no_test_split, True),
    "predict": (no_predict_dir, True),
    "data": (too_few_classes, True),
    "stream": (unreadable("train"), False),
    "scene": (five_bands, False),
}


def run(monkeypatch, capsys, argv: list[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["vitdense", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    return int(exited.value.code), out, err


@pytest.mark.parametrize("command", list(CASES))
def test_a_problem_in_the_data_ends_each_subcommand_as_one_error_line(
    command: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.delenv("VITDENSE_DEBUG", raising=False)
    root = write_folder_dataset(tmp_path / "data")
    break_data, takes_config = CASES[command]
    args, message = break_data(root)
    argv = [command, *(["--config", str(write_config(tmp_path, root))] if takes_config else []), *args]
    if command == "stream":
        argv += ["--config", str(write_config(tmp_path, root)), "--output", str(tmp_path / "chunks")]
    before = sorted(p.name for p in root.rglob("*"))
    code, out, err = run(monkeypatch, capsys, argv)
    lines = err.strip().splitlines()
    assert code == 2, out + err
    assert lines[-1].startswith(f"error: {message}"), lines[-1]
    assert "Traceback" not in out + err and "DataLoader worker" not in lines[-1]
    assert sorted(p.name for p in root.rglob("*")) == before  # nothing written into the data


def test_stream_refuses_what_it_cannot_convert_naming_it(tmp_path: Path) -> None:
    from tests.fake_data import write_coco_folder

    root = write_coco_folder(tmp_path / "coco")
    path = tmp_path / "coco.yaml"
    path.write_text(
        yaml.safe_dump({"data": {"class_path": "CocoDetectionDataModule", "init_args": {"root": str(root)}}})
    )
    with pytest.raises(ValueError, match="converts segmentation folder DataModules; CocoDetectionDataModule is not"):
        main(["stream", "--config", str(path), "--output", str(tmp_path / "chunks")])
    assert not (tmp_path / "chunks").exists()


def test_debug_raises_the_error_with_its_traceback(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VITDENSE_DEBUG", "1")
    root = write_folder_dataset(tmp_path / "data")
    args, message = too_few_classes(root)
    monkeypatch.setattr(sys, "argv", ["vitdense", "data", "--config", str(write_config(tmp_path, root)), *args])
    with pytest.raises(ValueError, match=re.escape(message)):
        main()


def test_only_the_datas_errors_are_shortened() -> None:
    """A ValueError inside a library (a likely bug) keeps its traceback; an OSError a library raised on a file the data
    code opened is the data's; a worker's error is judged by its own traceback."""
    from torch._utils import ExceptionWrapper

    from vitdense.data.formats.io import load_image

    def raised(call) -> BaseException:
        try:
            call()
        except BaseException as err:
            return err
        raise AssertionError("nothing raised")

    assert data_message(raised(lambda: np.zeros(2).reshape(3))) is None  # not raised by vitdense's data code
    assert data_message(raised(lambda: int("x"))) is None
    missing = raised(lambda: load_image("/nowhere/x.png"))
    assert "/nowhere/x.png" in data_message(missing)

    def in_worker() -> None:
        try:
            load_image("/nowhere/y.png")
        except ValueError:
            ExceptionWrapper(sys.exc_info(), where="in DataLoader worker process 0").reraise()

    wrapped = raised(in_worker)
    assert str(wrapped).startswith("Caught ValueError in DataLoader worker process 0")
    assert data_message(wrapped).startswith("Cannot read image '/nowhere/y.png'")
