"""Running an exported ONNX model with onnxruntime and numpy alone (no torch, no vitdense model code), and int8.

``vitdense export --format onnx`` stores what a runner needs in the file's metadata (``vitdense.*`` keys: task, class
names, class colours, input bands and layout, the normalisation the graph applies, the vitdense version), so
``OnnxModel(path)`` needs nothing else::

    model = OnnxModel("seg.onnx")
    classes = model.predict(image)  # (H, W) class ids of an (H, W, bands) uint8 or float image

``quantize_int8`` writes a statically quantised copy (onnxruntime's QDQ format, per-channel int8 weights, uint8
activations calibrated on sample images); ``compare_int8`` scores both on labelled images and times them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PREFIX = "vitdense."


def write_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Store ``metadata`` (JSON-able values) as ``vitdense.<key>`` metadata properties of the ONNX file ``path``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    kept = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = PREFIX + key, json.dumps(value)
    onnx.save(model, str(path))


class OnnxModel:
    """An exported vitdense model on onnxruntime: ``predict`` for class maps or class ids, ``logits`` for scores."""

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None) -> None:
        """Open ``path`` and read its vitdense metadata.

        Args:
            path: an ONNX file written by ``vitdense export --format onnx``.
            providers: onnxruntime execution providers; default CPU.
        """
        import onnxruntime as ort

        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), providers=list(providers or ["CPUExecutionProvider"]))
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {k[len(PREFIX) :]: json.loads(v) for k, v in props.items() if k.startswith(PREFIX)}
        if "task" not in self.metadata:
            raise ValueError(f"'{self.path}' has no vitdense metadata: export it with `vitdense export --format onnx`.")
        self.task: str = self.metadata["task"]
        self.class_names: list[str] = self.metadata["class_names"]
        self.in_chans: int = int(self.metadata.get("in_chans", 3))
        self.input_name = self.session.get_inputs()[0].name

    def prepare(self, images: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
        """(N, bands, H, W) float32 from (H, W, bands) or (N, H, W, bands) images: 8-bit scaled to [0, 1] (as the
        training pipeline does), other dtypes as they are (the graph normalises with the run's band statistics)."""
        batch = np.asarray(images) if isinstance(images, np.ndarray) else np.stack(list(images))
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[-1] != self.in_chans:
            raise ValueError(f"Expected (H, W, {self.in_chans}) or (N, H, W, {self.in_chans}) images for "
                             f"'{self.path}', got shape {batch.shape}.")  # fmt: skip
        scaled = batch.astype(np.float32) / 255.0 if batch.dtype == np.uint8 else batch.astype(np.float32)
        return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))

    def logits(self, images: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
        """Raw outputs: (N, K, H, W) segmentation logits or (N, K) class logits."""
        (out,) = self.session.run(None, {self.input_name: self.prepare(images)})
        return out

    def predict(self, images: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
        """Class ids: (H, W) for one segmentation image, (N, H, W) for several; the class index (or N of them) for
        classification."""
        ids = self.logits(images).argmax(1)
        single = isinstance(images, np.ndarray) and images.ndim == 3
        return ids[0] if single else ids

    def colorize(self, classes: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 colours of a class map (the data's class colours, else the palette of the export)."""
        palette = np.array(self.metadata["palette"], np.uint8).reshape(-1, 3)
        return palette[classes % len(palette)]


def quantize_int8(model_path: str | Path, output: str | Path, calibration: Sequence[np.ndarray]) -> Path:
    """Write a statically quantised int8 copy of ``model_path`` (QDQ, per-channel weights) calibrated on the
    ``calibration`` images (as ``OnnxModel.prepare`` takes them, one at a time), with the same vitdense metadata."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    output = Path(output)
    if output.exists():
        raise FileExistsError(f"'{output}' exists; choose another output (nothing was written).")
    if not calibration:
        raise ValueError("int8 calibration needs at least one image.")
    fp32 = OnnxModel(model_path)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{fp32.input_name: fp32.prepare(image)} for image in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(str(model_path), str(output), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    write_metadata(output, {**fp32.metadata, "quantized": "int8 static (QDQ, per-channel weights)",
                            "calibration_images": len(calibration)})  # fmt: skip
    return output


def _score(model: OnnxModel, samples: Sequence[tuple[np.ndarray, Any]], ignore_index: int) -> tuple[float, float]:
    """(metric, seconds per image): mIoU over the split for segmentation, accuracy for classification."""
    k = len(model.class_names)
    confusion = np.zeros((k, k), np.int64)
    correct, seconds = 0, 0.0
    for image, label in samples:
        start = time.perf_counter()
        pred = model.predict(image)
        seconds += time.perf_counter() - start
        if model.task == "classification":
            correct += int(pred[0] == label) if np.ndim(pred) else int(pred == label)
            continue
        if pred.shape != label.shape:  # an eval_size resize: predictions back to the mask's size (nearest)
            rows = np.arange(label.shape[0]) * pred.shape[0] // label.shape[0]
            cols = np.arange(label.shape[1]) * pred.shape[1] // label.shape[1]
            pred = pred[rows[:, None], cols[None]]
        valid = label != ignore_index
        confusion += np.bincount(label[valid] * k + pred[valid], minlength=k * k).reshape(k, k)
    if model.task == "classification":
        return correct / max(len(samples), 1), seconds / max(len(samples), 1)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0])) if (union > 0).any() else float("nan"), seconds / len(
        samples
    )


def compare_int8(fp32_path: str | Path, int8_path: str | Path, samples: Sequence[tuple[np.ndarray, Any]],
                 ignore_index: int = 255) -> dict[str, float]:  # fmt: skip
    """Score the fp32 and int8 models on the same labelled ``samples`` ((image, mask or class) pairs) and time them
    (seconds per image, one at a time, on this machine's CPU)."""
    fp32, int8 = OnnxModel(fp32_path), OnnxModel(int8_path)
    metric = "mIoU" if fp32.task == "segmentation" else "acc"
    fp32.predict(samples[0][0])  # first runs allocate: keep them out of the timing
    int8.predict(samples[0][0])
    score32, time32 = _score(fp32, samples, ignore_index)
    score8, time8 = _score(int8, samples, ignore_index)
    return {"metric": metric, "fp32": score32, "int8": score8, "change": score8 - score32,
            "fp32_s_per_image": time32, "int8_s_per_image": time8, "speedup": time32 / max(time8, 1e-12),
            "images": len(samples)}  # fmt: skip
