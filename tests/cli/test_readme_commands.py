"""The README's commands run as written: every ``python -m vitdense ...`` line of README.md's code blocks is run (or,
where a test cannot, parsed) in README order in a scratch folder, so a fit's run folder serves the commands below it.

Only sizes and paths are substituted: the shipped configs are copied into the folder, data roots point at fake data
written by tests/fake_data.py, a weights file at a tiny one, and small sizes (backbone, heads, images, steps) are
inserted after the command's ``--config`` files, so the README's own keys still win. ``COMMANDS`` lists every command
with how it is checked; a command the README gains or changes that it does not list fails the suite.
"""

import contextlib
import inspect
import io
import json
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file

from tests.data.object_fixtures import labelme_folder
from tests.fake_data import FAKE_LAYOUTS, write_coco_folder, write_folder_dataset, write_image_folder
from vitdense import data as data_modules
from vitdense.cli.commands import COMMANDS as OWN_COMMANDS
from vitdense.cli.entry import main
from vitdense.engine.lightning_cli import PredictionWriter

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").rglob("*.md"))  # the documentation site's pages: their commands are held to the same bar

DEFAULT, SLOW = "run", "run (slow)"
LAST = "runs/quickstart/version_0/checkpoints/last.ckpt"  # the quickstart fit's, as the README names it
# Every vitdense command in README.md's code blocks (continuations joined, comments dropped) and how it is checked:
# DEFAULT runs in the default suite, SLOW under `-m slow` (parsed in the default suite); any other value is the reason
# the command is parsed only (LightningCLI's --print_config; vitdense's own flags against its --help).
COMMANDS = {
    "python -m vitdense fit --config configs/quickstart.yaml": DEFAULT,
    "python -m vitdense test --config configs/quickstart.yaml "
    "--ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt": DEFAULT,
    "python -m vitdense predict --config configs/quickstart.yaml "
    "--ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt": DEFAULT,
    "python -m vitdense fit --config configs/segmentation_folder.yaml --data.root mydata --data.num_classes 5 "
    "--data.ignore_index 255": SLOW,
    "python -m vitdense fit --config configs/segmentation_folder.yaml --data.root ../shared/data/camvid_sample "
    "--data.num_classes 11 --data.ignore_index 11 --trainer.max_epochs 1 "
    "--model.init_args.backbone.pretrained ../shared/weights/vit_tiny_patch16_224.safetensors": SLOW,
    "python -m vitdense data --config my_seg.yaml": DEFAULT,
    "python -m vitdense data --config my_seg.yaml --write my_seg_as_trained": DEFAULT,
    "python -m vitdense scene --config configs/my_fields.yaml --ckpt_path runs/.../best.ckpt --input scene.tif "
    "--bands 3 2 1 7": "a user's raster config and GeoTIFF scene (tests/test_scenes.py runs `scene` end to end)",
    "python -m vitdense scene --model fields.safetensors --input 'tiles/*.tif' --output maps/": "an exported raster "
    "model and GeoTIFF tiles (tests/test_scenes.py runs `scene` end to end)",
    "python -m vitdense stream --config configs/my_fields.yaml --output /data/fields-stream": "a user's raster config "
    "(tests/data/test_streaming.py streams and trains end to end)",
    "python -m vitdense fit --config configs/quickstart_classification.yaml": SLOW,
    "python -m vitdense fit --config configs/classification_folder.yaml --data.root myimages": SLOW,
    "python -m vitdense fit --config configs/quickstart_detection.yaml": SLOW,
    "python -m vitdense fit --config configs/detection_coco.yaml --data.root mycoco": SLOW,
    "python -m vitdense fit --config configs/detection_coco.yaml --data.root mylabelme --data.val_fraction 0.2": SLOW,
    "python -m vitdense fit --config configs/quickstart_instance.yaml": SLOW,
    "python -m vitdense fit --config configs/instance_coco.yaml --data.root mycoco": SLOW,
    "python -m vitdense tune --config configs/my_seg.yaml": DEFAULT,
    "python -m vitdense fit --config configs/my_seg.yaml --config runs/tune/my_seg/tune.yaml": SLOW,
    "python -m vitdense fit --config configs/segmentation_folder.yaml --data.root mydata --trainer.accelerator gpu "
    "--trainer.devices 4 --trainer.strategy ddp --trainer.precision bf16-mixed --trainer.sync_batchnorm true": "4 GPUs",
    "torchrun --nnodes 2 --nproc_per_node 4 --node_rank 0 --master_addr node0 --master_port 29500 -m vitdense fit "
    "--config configs/segmentation_folder.yaml --trainer.num_nodes 2 --trainer.devices 4 --trainer.strategy ddp "
    "--trainer.accelerator gpu": "2 machines of 4 GPUs (tests/test_multinode.py runs two torchrun nodes on CPU)",
    "python -m vitdense estimate --config configs/ade20k/upernet_vit_base.yaml": DEFAULT,
    "python -m vitdense estimate --config configs/quickstart.yaml --size 128 --batch 32": DEFAULT,
    f"python -m vitdense test --config configs/quickstart.yaml --ckpt_path {LAST} --model.init_args.inference "
    "'{mode: slide, crop: [48, 48], stride: [32, 32], flip: true, scales: [0.75, 1.0]}'": DEFAULT,
    "python -m vitdense evaluate --config configs/quickstart.yaml "
    "--ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt": DEFAULT,
    f"python -m vitdense export --config configs/quickstart.yaml --ckpt_path {LAST} --format safetensors": DEFAULT,
    "python -m vitdense serve --model runs/quickstart/version_0/quickstart.safetensors --port 8000": "a server that "
    "runs until stopped (tests/test_serve.py starts the real one under -m slow)",
    f"python -m vitdense serve --config configs/quickstart.yaml --ckpt_path {LAST}": "a server that runs until "
    "stopped (tests/test_serve.py starts the real one under -m slow)",
}
LIGHTNING = ("fit", "validate", "test", "predict")

# Sizes put after a command's --config files: small enough for seconds on a CPU, large enough for every head.
TINY_BACKBONE = {"pretrained": False, "model_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}}
TINY_HEAD = {"channels": 16, "aux_channels": 8, "roi_batch_size": 16, "box_head_width": 32}
TINY_DATA = {"num_train": 4, "num_val": 2, "num_test": 2, "crop_size": 32, "image_size": 64, "batch_size": 2,
             "num_workers": 0}  # fmt: skip
# Three steps, a validation after each epoch: on synthetic data (2 batches an epoch) the fit ends at step 3, mid-epoch,
# after the validation at step 2, where its best checkpoint is: its last.ckpt must still hold step 3.
TINY_TRAINER = {"max_steps": 3, "check_val_every_n_epoch": 1, "limit_val_batches": 2, "num_sanity_val_steps": 0,
                "accelerator": "cpu", "devices": 1, "precision": "32", "enable_progress_bar": False,
                "enable_model_summary": False, "log_every_n_steps": 1}  # fmt: skip
TINY_OWN = {"tune": ["--steps", "10"]}  # vitdense's own flags of a size: 10 lr steps turn the tiny loss


@dataclass
class Command:
    text: str  # one line, comments dropped: the key of COMMANDS
    argv: list[str]  # the arguments after `vitdense`


def readme_commands(text: str) -> list[Command]:
    """Every ``vitdense`` command in the code blocks of a markdown text, in order."""
    found = []
    for block in re.findall(r"^\s*```[^\n]*\n(.*?)^\s*```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            if not re.search(r"(^|\s-m\s+)vitdense\s", line.strip()):
                continue
            tokens = shlex.split(line, comments=True)
            start = tokens.index("vitdense") + 1
            found.append(Command(shlex.join(tokens), tokens[start:]))
    return found


def _value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def _configs(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"]


def _merge(base: dict, new: dict) -> dict:
    """``new`` over ``base``, dict by dict (as a later --config does)."""
    out = dict(base)
    for key, value in new.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _merged_config(argv: list[str]) -> dict:
    merged: dict = {}
    for path in _configs(argv):
        merged = _merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    return merged


def _init_args(cls: type) -> set[str]:
    return {
        name
        for klass in cls.__mro__
        if "__init__" in vars(klass)
        for name in inspect.signature(klass.__init__).parameters
    }


def _tiny(argv: list[str]) -> list[str]:
    """The size overrides for a command: model, data and trainer keys its subcommand takes."""
    sub, cfg = argv[0], _merged_config(argv)
    extra: list[str] = []
    data = cfg.get("data", {})
    data_cls = getattr(data_modules, data.get("class_path", "").rsplit(".", 1)[-1], None)
    if data_cls is not None:
        for key, value in TINY_DATA.items():
            if key in _init_args(data_cls):
                extra += [f"--data.{key}", str(value)]
    if sub == "data":
        return extra
    model = cfg.get("model", {}).get("init_args", {})
    backbone = model.get("backbone")
    backbone = {"name": backbone} if isinstance(backbone, str) else dict(backbone or {})
    # estimate builds no weights whatever `pretrained` says (the ADE20K recipe's true runs offline): it keeps the
    # config's, and the config's trainer (devices, strategy, precision: what its memory table is for)
    tiny_backbone = {"model_kwargs": TINY_BACKBONE["model_kwargs"]} if sub == "estimate" else dict(TINY_BACKBONE)
    if backbone.get("out_indices"):  # as many blocks as the config's pyramid reads
        depth = max(tiny_backbone["model_kwargs"]["depth"], max(backbone["out_indices"]) + 1)
        tiny_backbone["model_kwargs"] = {**tiny_backbone["model_kwargs"], "depth": depth}
    extra += ["--model.init_args.backbone", json.dumps({**backbone, **tiny_backbone})]
    if isinstance(model.get("head"), dict):
        head = {key: TINY_HEAD.get(key, value) for key, value in model["head"].items()}
        extra += ["--model.init_args.head", json.dumps(head)]
    if sub == "estimate":
        return extra
    extra += [arg for key, value in TINY_TRAINER.items() for arg in (f"--trainer.{key}", str(value).lower())]
    return extra + TINY_OWN.get(sub, [])


def _coco_instances(root: Path) -> Path:
    """write_coco_folder's boxes, each with its rectangle as a polygon."""
    write_coco_folder(root)
    for path in root.glob("*/annotations.json"):
        coco = json.loads(path.read_text())
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        path.write_text(json.dumps(coco))
    return root


def _tiny_weights(path: Path) -> Path:
    """A timm state dict of the tiny backbone of the model the file is named after, as a local weights file."""
    model = timm.create_model(path.stem, pretrained=False, **TINY_BACKBONE["model_kwargs"])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _fake_root(data_class: str, argv: list[str], root: Path) -> Path:
    if data_class == "SegmentationFolderDataModule":
        void = int(_value(argv, "--data.ignore_index") or 255)
        return write_folder_dataset(root, num_classes=int(_value(argv, "--data.num_classes") or 3), void=void)
    if data_class == "ImageFolderDataModule":
        return write_image_folder(root)
    if data_class in ("CocoDetectionDataModule", "CocoInstanceDataModule") and "--data.val_fraction" in argv:
        labelme_folder(root)  # one folder of LabelMe files, split by val_fraction
        return root
    if data_class == "CocoDetectionDataModule":
        return write_coco_folder(root)
    if data_class == "CocoInstanceDataModule":
        return _coco_instances(root)
    return FAKE_LAYOUTS[data_class](root)


def _paths(argv: list[str], work: Path) -> list[str]:
    """The command with its data root and weights file replaced by fake ones under ``work``."""
    argv = list(argv)
    data_class = _merged_config(argv).get("data", {}).get("class_path", "").rsplit(".", 1)[-1]
    for i, arg in enumerate(argv[:-1]):
        if arg == "--data.root":
            root = work / "data" / f"{data_class}-{Path(argv[i + 1]).name}"  # one per command: a name recurs
            argv[i + 1] = str(_fake_root(data_class, argv, root))
        elif arg == "--model.init_args.backbone.pretrained" and argv[i + 1].endswith(".safetensors"):
            argv[i + 1] = str(_tiny_weights(work / "weights" / Path(argv[i + 1]).name))
    if data_class in FAKE_LAYOUTS and "--data.root" not in argv:  # a benchmark config's own root
        argv += ["--data.root", str(FAKE_LAYOUTS[data_class](work / "data" / data_class))]
    return argv


def _with_tiny(argv: list[str]) -> list[str]:
    """``argv`` with the size overrides right after its last ``--config`` (the README's own keys come later)."""
    flags = [i for i, arg in enumerate(argv) if arg == "--config"]
    at = flags[-1] + 2 if flags else 1
    return argv[:at] + _tiny(argv) + argv[at:]


def _exits(argv: list[str]) -> str:
    """What ``main(argv)`` prints before exiting 0 (``--help``, ``--print_config``)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code in (0, None), f"vitdense {shlex.join(argv)} exited with {exit_info.value.code}"
    return out.getvalue()


def parse(argv: list[str]) -> None:
    """Check a command's arguments without running it: LightningCLI's through --print_config, vitdense's own flags
    against its --help (and its --model/--data/--trainer keys through the config's --print_config)."""
    if argv[0] in LIGHTNING:
        _exits([*argv, "--print_config"])
        return
    assert argv[0] in OWN_COMMANDS, f"`vitdense {argv[0]}` is no subcommand"
    help_text = _exits([argv[0], "--help"])
    flags = [arg.split("=")[0] for arg in argv[1:] if arg.startswith("--")]
    unknown = [f for f in flags if "." not in f and not re.search(re.escape(f) + r"(?![\w-])", help_text)]
    assert not unknown, f"vitdense {argv[0]} has no {unknown} (its --help lists its flags)"
    keys = [part for i, arg in enumerate(argv) if arg.startswith("--") and "." in arg for part in argv[i : i + 2]]
    configs = [arg for path in _configs(argv) if Path(path).is_file() for arg in ("--config", path)]
    if configs:
        _exits(["fit", *configs, *keys, "--print_config"])


def _check(argv: list[str], result: object) -> None:
    """What a run must leave: a fit's last.ckpt at its last step, a test's metrics, an estimate's table, a predict's
    files."""
    if argv[0] == "fit":
        last = Path(result.trainer.log_dir) / "checkpoints" / "last.ckpt"
        saved = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
        assert saved == result.trainer.global_step, f"{last} holds step {saved}, not the fit's last step"
    elif argv[0] == "test":
        assert any(key.startswith("test/") for key in result.trainer.callback_metrics)
    elif argv[0] == "estimate":
        assert "forward, inference" in result and "training step" in result, result
    elif argv[0] == "predict":
        (writer,) = [cb for cb in result.trainer.callbacks if isinstance(cb, PredictionWriter)]
        assert writer.count > 0 and any(writer.output_dir.iterdir())


def _scratch(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``work``: the shipped configs, and the README's copies of the segmentation template (``my_seg.yaml``)."""
    shutil.copytree(REPO / "configs", work / "configs")
    cfg = yaml.safe_load((REPO / "configs" / "segmentation_folder.yaml").read_text())
    cfg["data"]["init_args"].update(root=str(write_folder_dataset(work / "data" / "mydata")), num_classes=3)
    for path in (work / "my_seg.yaml", work / "configs" / "my_seg.yaml"):
        path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(work)


def documented_commands() -> list[Command]:
    """README.md's commands in order, then those of the docs pages that README.md does not have (each once)."""
    seen: set[str] = set()
    found = []
    for path in [README, *DOCS]:
        for command in readme_commands(path.read_text()):
            if command.text not in seen:
                seen.add(command.text)
                found.append(command)
    return found


def walk(work: Path, monkeypatch: pytest.MonkeyPatch, runs: Callable[[str], bool]) -> list[str]:
    """Every README command in order in ``work``: run where ``runs(how)``, parsed otherwise; the commands run."""
    _scratch(work, monkeypatch)
    done = []
    for command in documented_commands():
        how = COMMANDS[command.text]
        if how in (DEFAULT, SLOW) and runs(how):
            argv = _paths(command.argv, work)
            result = main(_with_tiny(argv))
            _check(argv, result)
            done.append(command.text)
        else:
            parse(command.argv)
    return done


def test_every_readme_command_is_in_the_table() -> None:
    found = [c.text for c in documented_commands()]
    new = [text for text in found if text not in COMMANDS]
    assert not new, f"README.md or docs/ have commands this test does not check; add them to COMMANDS: {new}"
    gone = [text for text in COMMANDS if text not in found]
    assert not gone, f"COMMANDS lists commands neither README.md nor docs/ have; remove them: {gone}"


def test_readme_commands_run_or_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quickstart's fit -> test / predict / evaluate / export from its last.ckpt, `data`, `tune` and `estimate`
    run; every other command is parsed."""
    done = walk(tmp_path, monkeypatch, lambda how: how == DEFAULT)
    assert len(done) == list(COMMANDS.values()).count(DEFAULT)


@pytest.mark.slow
def test_readme_commands_all_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command a test can run, runs: the fits on folders, COCO, LabelMe and the tuned config too."""
    done = walk(tmp_path, monkeypatch, lambda how: True)
    assert len(done) == sum(how in (DEFAULT, SLOW) for how in COMMANDS.values())
