"""Running an exported ONNX model with onnxruntime and numpy alone (no torch, no vitdense model code), and int8.

``vitdense export --format onnx`` stores what a runner needs in the file's metadata (``vitdense.*`` keys: task, class
names, class colours, input bands and layout, the normalisation the graph applies, the vitdense version), so
``OnnxModel(path)`` needs nothing else::

    model = OnnxModel("seg.onnx")
    classes = model.predict(image)  # (H, W) class ids of an (H, W, bands) uint8 or float image
    found = OnnxModel("det.onnx").predict(image)  # detection: {"boxes", "scores", "labels"} (+ "masks")

Detection and instance segmentation graphs hold their post-processing (score threshold, NMS, mask pasting), so
``predict`` only reads the outputs and thresholds the mask probabilities.

``quantize_int8`` writes a statically quantised copy (onnxruntime's QDQ format, per-channel int8 weights, uint8
activations calibrated on sample images; convolutions and weight matmuls only, see ``kept_in_fp32``);
``compare_int8`` scores both on labelled images and times them.
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
    """An exported vitdense model on onnxruntime: ``predict`` for class maps, class ids or detections, ``logits`` for
    segmentation and classification scores."""

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
        self.detects = self.task in ("detection", "instance_segmentation")

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
        """Raw outputs: (N, K, H, W) segmentation logits or (N, K) class logits.

        Segmentation runs the exported model's inference settings (metadata ``inference``), as its val, test and
        predict did: overlapping windows of the training crop (``mode: slide``), the flipped image, several scales;
        flips and scales come back as log-probabilities (their softmax is the average)."""
        if self.detects:
            raise ValueError(f"'{self.path}' is a {self.task} model: use predict() (boxes, scores, labels).")
        batch = self.prepare(images)
        cfg = self.metadata.get("inference") if self.task == "segmentation" else None
        return self._forward(batch) if cfg is None else segmentation_logits(self._forward, batch, cfg)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})
        return out

    def predict(self, images: np.ndarray | Iterable[np.ndarray]) -> Any:
        """Class ids: (H, W) for one segmentation image, (N, H, W) for several; the class index (or N of them) for
        classification; for detection a dict per image (a list for several, see ``detect``)."""
        if self.detects:
            batch = self.prepare(images)
            found = [self.detect(image) for image in batch]
            return found[0] if isinstance(images, np.ndarray) and images.ndim == 3 else found
        logits = self.logits(images)
        ids = logits.argmax(1)
        keep = (self.metadata.get("inference") or {}).get("keep_largest") if self.task == "segmentation" else None
        if keep:  # the classes the model keeps as one solid object, as its val, test and predict did
            from vitdense.data.regions import keep_largest  # numpy and OpenCV only

            ids = np.stack([keep_largest(i, s, keep) for i, s in zip(ids, logits, strict=True)])
        single = isinstance(images, np.ndarray) and images.ndim == 3
        return ids[0] if single else ids

    def detect(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """One prepared (bands, H, W) image's detections: ``boxes`` (N, 4) xyxy pixels, ``scores`` (N,), ``labels``
        (N,) class ids and, for instance segmentation, ``masks`` (N, H, W) bool (probability above ``mask_thresh``)."""
        outputs = self.session.run(None, {self.input_name: image[None]})
        found = dict(zip([o.name for o in self.session.get_outputs()], outputs, strict=True))
        if "masks" in found:
            found["masks"] = found["masks"] > self.metadata["mask_thresh"]
        return found

    def colorize(self, classes: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 colours of a class map (the data's class colours, else the palette of the export)."""
        palette = np.array(self.metadata["palette"], np.uint8).reshape(-1, 3)
        return palette[classes % len(palette)]


def segmentation_logits(forward: Any, batch: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """Logits of (N, C, H, W) ``batch`` by ``cfg`` (``mode`` whole | slide with ``crop`` and ``stride``, ``flip``,
    ``scales``): numpy's version of ``vitdense.tasks.inference.infer_logits`` (same windows and averaging), for a
    runner without torch."""

    def run(x: np.ndarray) -> np.ndarray:
        return forward(x) if cfg["mode"] == "whole" else _slide(forward, x, cfg["crop"], cfg["stride"])

    scales, flip = [float(s) for s in cfg["scales"]], bool(cfg["flip"])
    if scales == [1.0] and not flip:
        return run(batch)
    height, width = batch.shape[-2:]
    probs = np.zeros((), np.float32)
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = batch if size == (height, width) else _resize(batch, size)
        for flipped in (False, True) if flip else (False,):
            logits = run(scaled[..., ::-1] if flipped else scaled)
            logits = _resize(logits[..., ::-1] if flipped else logits, (height, width))
            e = np.exp(logits - logits.max(1, keepdims=True))
            probs = probs + e / e.sum(1, keepdims=True)
    return np.log(np.maximum(probs / (len(scales) * (2 if flip else 1)), 1e-12)).astype(np.float32)


def _slide(forward: Any, batch: np.ndarray, crop: Sequence[int], stride: Sequence[int]) -> np.ndarray:
    """Windows every ``stride`` pixels, the last shifted inside the image; a side shorter than the crop is run whole;
    logits summed and divided by the windows covering each pixel (mmseg's slide inference)."""
    from vitdense.tasks.inference import window_starts  # the window positions of slide_logits and of scenes

    height, width = batch.shape[-2:]
    crop_h, crop_w = min(crop[0], height), min(crop[1], width)
    total = count = None
    for y in window_starts(height, crop_h, stride[0]):
        for x in window_starts(width, crop_w, stride[1]):
            logits = forward(batch[:, :, y : y + crop_h, x : x + crop_w])
            if total is None or count is None:
                total = np.zeros((*logits.shape[:2], height, width), np.float32)
                count = np.zeros((height, width), np.float32)
            total[:, :, y : y + crop_h, x : x + crop_w] += logits
            count[y : y + crop_h, x : x + crop_w] += 1
    assert total is not None and count is not None
    return total / count


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes (PyTorch's ``align_corners=False``, no antialias)."""
    rows, cols = _interpolation(size[0], x.shape[-2]), _interpolation(size[1], x.shape[-1])
    return np.einsum("oh,nchw,pw->ncop", rows, x, cols, optimize=True).astype(np.float32)


def _interpolation(out_size: int, in_size: int) -> np.ndarray:
    """(out_size, in_size) weights of PyTorch's bilinear interpolation along one axis."""
    src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    weights = np.zeros((out_size, in_size), np.float64)
    np.add.at(weights, (np.arange(out_size), low), 1.0 - (src - low))
    np.add.at(weights, (np.arange(out_size), high), src - low)
    return weights


# The ops that carry weights: int8 there is what speeds a model up. Elementwise ops, norms and softmax stay fp32.
QUANTIZED = ["Conv", "MatMul", "Gemm"]


def kept_in_fp32(path: str | Path) -> list[str]:
    """The MatMuls of ``path`` that int8 would hurt most in a transformer, left in fp32: products of two activations
    (attention's q.k and p.v, no fixed range to calibrate) and those after a GELU (a long-tailed input that one uint8
    scale per tensor rounds to a few levels). On a ViT-Ti fine-tuned on the hymenoptera sample, int8 agreed with fp32
    on 15 of its 36 images quantising every op, and on 34 quantising QUANTIZED ops other than these."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {w.name for w in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}

    def after_gelu(name: str, hops: int = 4) -> bool:  # erf(x / sqrt(2)) within four nodes upstream
        node = producer.get(name)
        return node is not None and (node.op_type == "Erf" or (hops > 1 and any(after_gelu(i, hops - 1)
                                                                                for i in node.input)))  # fmt: skip

    return [node.name for node in graph.node if node.op_type == "MatMul"
            and (not any(i in weights for i in node.input) or after_gelu(node.input[0]))]  # fmt: skip


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
    if fp32.detects:
        raise ValueError(f"int8 covers segmentation and classification; '{model_path}' is {fp32.task} (keep fp32).")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{fp32.input_name: fp32.prepare(image)} for image in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    kept = kept_in_fp32(model_path)
    quantize_static(str(model_path), str(output), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED,
                    nodes_to_exclude=kept)  # fmt: skip
    write_metadata(output, {**fp32.metadata, "quantized": "int8 static (QDQ, per-channel weights)",
                            "calibration_images": len(calibration), "kept_in_fp32": len(kept)})  # fmt: skip
    return output


def _metric(task: str, preds: list[Any], samples: Sequence[tuple[np.ndarray, Any]], k: int, ignore_index: int) -> float:
    """mIoU over the split (one confusion matrix) for segmentation, accuracy for classification."""
    if task == "classification":
        return float(np.mean([int(np.ravel(p)[0]) == label for p, (_, label) in zip(preds, samples, strict=True)]))
    confusion = np.zeros((k, k), np.int64)
    for pred, (_, label) in zip(preds, samples, strict=True):
        valid = label != ignore_index
        confusion += np.bincount(label[valid] * k + pred[valid], minlength=k * k).reshape(k, k)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0])) if (union > 0).any() else float("nan")


def _at_label_size(pred: np.ndarray, label: Any) -> np.ndarray:
    """A class map resized (nearest) to its mask's size when the model ran at an eval_size; class ids as they are."""
    if np.ndim(label) < 2 or pred.shape == label.shape:
        return pred
    rows = np.arange(label.shape[0]) * pred.shape[0] // label.shape[0]
    cols = np.arange(label.shape[1]) * pred.shape[1] // label.shape[1]
    return pred[rows[:, None], cols[None]]


def compare_int8(fp32_path: str | Path, int8_path: str | Path, samples: Sequence[tuple[np.ndarray, Any]],
                 ignore_index: int = 255) -> dict[str, Any]:  # fmt: skip
    """Score the fp32 and int8 models on the same labelled ``samples`` ((image, mask or class) pairs) and time them
    (seconds per image, one at a time, on this machine's CPU; the two models alternate image by image, so a change
    of load on a shared machine slows both alike). ``agreement``: the share of predictions (classes, or pixels) on
    which int8 and fp32 agree."""
    models = OnnxModel(fp32_path), OnnxModel(int8_path)
    preds: tuple[list[Any], list[Any]] = ([], [])
    seconds = [0.0, 0.0]
    for model in models:
        model.predict(samples[0][0])  # first runs allocate: keep them out of the timing
    for image, label in samples:
        for i, model in enumerate(models):
            start = time.perf_counter()
            pred = model.predict(image)
            seconds[i] += time.perf_counter() - start
            preds[i].append(_at_label_size(pred, label))
    task, k = models[0].task, len(models[0].class_names)
    score32, score8 = (_metric(task, p, samples, k, ignore_index) for p in preds)
    time32, time8 = (s / len(samples) for s in seconds)
    agreement = float(np.mean(np.concatenate([np.ravel(a == b) for a, b in zip(*preds, strict=True)])))
    return {"metric": "mIoU" if task == "segmentation" else "acc", "fp32": score32, "int8": score8,
            "change": score8 - score32, "agreement": agreement, "fp32_s_per_image": time32,
            "int8_s_per_image": time8, "speedup": time32 / max(time8, 1e-12), "images": len(samples)}  # fmt: skip
