"""``vitdense serve``: a trained model behind an HTTP endpoint on LitServe.

``POST /predict`` takes one image, as JSON ``{"image": "<base64 of the file>"}`` or as a multipart file upload
(field ``image`` or ``file``), and answers JSON: segmentation ``{"mask_png": <base64 palette PNG of class ids>,
"size": [h, w], "pixels": {class: count}}``, classification ``{"label", "class_name", "score", "probs"}``,
detection ``{"boxes" (xyxy pixels), "scores", "labels", "class_names"}`` (and COCO RLE ``"masks"`` for instance
segmentation). Concurrent requests are batched (``--max_batch_size``, ``--batch_timeout``); images of one size run as
one forward, of at most ``--max_pixels`` pixels in all. An image that cannot be served (not an image, smaller than the
model's minimum side, too large, the wrong band count) gets a 4xx with the reason before it reaches the model. Should
a forward still fail, each of its images runs alone, so only the image that fails gets an error; an image's result
never depends on the others in its batch, and the server stays up. ``GET /health`` answers ``ok`` once the model is
loaded. SIGINT or SIGTERM stops the server and every process it started.

The minimum side is found by trying the model (the coarsest level of its pyramid must be at least one cell). The
default ``--max_pixels`` comes from the memory the server has (free device memory, else available host memory) and
the inference memory ``vitdense estimate`` gives for the model at that size, with ``HEADROOM``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import multiprocessing
import os
import signal
from typing import Any

import numpy as np
import torch
from PIL import Image

from vitdense.deploy.limits import (  # noqa: F401  (decode_image, HEADROOM: part of this module's surface)
    HEADROOM,
    ValidateImages,
    decode_image,
    default_max_pixels,
    free_memory,
)

try:  # the API class must live at module level: LitServe pickles it into its worker process
    from litserve import LitAPI as _LitAPI
except ImportError:  # pragma: no cover - litserve is in the dev/serve extras
    _LitAPI = object


class VitdenseAPI(_LitAPI):
    """LitServe API of a vitdense task, loaded in the worker (``load`` arguments of ``load_for_inference``;
    ``limits``: ``decode_image``'s ``in_chans``, ``max_pixels``, ``min_side``).

    LitServe fails a whole batch when one of its calls raises, so no call here raises for one request: a request
    that fails becomes ``{"status", "detail"}`` and ``encode_response`` answers that request alone with it.
    """

    def __init__(self, load: dict[str, Any], max_batch_size: int = 8, batch_timeout: float = 0.02,
                 limits: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.load = load
        self.limits = limits or {}

    def setup(self, device: str) -> None:
        from vitdense.engine.restore import load_for_inference

        self.task = load_for_inference(**self.load).to(device).eval()
        self.device_name = device

    def decode_request(self, request: Any) -> np.ndarray | dict[str, Any]:
        try:
            if isinstance(request, dict):
                return decode_image(json.dumps(request).encode(), "application/json", **self.limits)
            upload = request.get("image") or request.get("file")  # multipart form (validated by the middleware)
            return decode_image(upload.file.read(), "", **self.limits)
        except ValueError as err:
            status, message = err.args if len(err.args) == 2 else (400, str(err))
            return {"status": int(status), "detail": str(message)}
        except Exception as err:  # one bad request must not fail its batch
            return {"status": 400, "detail": f"The request could not be read ({type(err).__name__}: {err})."}

    def batch(self, inputs: list[np.ndarray | dict[str, Any]]) -> list[np.ndarray | dict[str, Any]]:
        return inputs  # images differ in size: predict groups them

    def predict(self, inputs: list[np.ndarray | dict[str, Any]]) -> list[dict[str, Any]]:
        # A request that failed to decode keeps its {"status", "detail"}; every image gets its answer.
        out = [x if isinstance(x, dict) else {} for x in inputs]
        valid = [(i, x) for i, x in enumerate(inputs) if isinstance(x, np.ndarray)]
        answers = predict_images(self.task, [x for _, x in valid], self.device_name,
                                 self.limits.get("max_pixels"))  # fmt: skip
        for (i, _), answer in zip(valid, answers, strict=True):
            out[i] = answer
        return out

    def unbatch(self, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return outputs

    def encode_response(self, output: dict[str, Any]) -> Any:
        if "detail" in output:  # this request failed: its own status, the others in its batch are unaffected
            from starlette.responses import JSONResponse

            return JSONResponse({"detail": output["detail"]}, status_code=output["status"])
        return output


if _LitAPI is not object:  # LitServe hands decode_request the parsed JSON body or form for a Request annotation
    from starlette.requests import Request

    VitdenseAPI.decode_request.__annotations__["request"] = Request


def predict_images(task: Any, images: list[np.ndarray], device: str = "cpu",
                   max_pixels: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """JSON-able predictions of (H, W, 3) uint8 images, each run at its own size: same-size images together, fewer
    than ``max_pixels`` pixels per forward. Should a forward fail, its images run one by one, and an image that fails
    alone answers ``{"status", "detail"}``: it never fails the others."""
    from vitdense.tasks.base import group_indices

    out: list[dict[str, Any]] = [{} for _ in images]
    for idx in group_indices(image.shape for image in images):
        pixels = images[idx[0]].shape[0] * images[idx[0]].shape[1]
        per_forward = max(1, (max_pixels - 1) // pixels) if max_pixels else len(idx)
        for start in range(0, len(idx), per_forward):
            chunk = idx[start : start + per_forward]
            try:
                answers = _predict_same_size(task, [images[i] for i in chunk], device)
            except Exception as err:  # find the image that fails; the others still get their answer
                if len(chunk) == 1:
                    answers = [_failure(images[chunk[0]], err)]
                else:
                    answers = [_predict_alone(task, images[i], device) for i in chunk]
            for i, answer in zip(chunk, answers, strict=True):
                out[i] = answer
    return out


def _predict_alone(task: Any, image: np.ndarray, device: str) -> dict[str, Any]:
    try:
        return _predict_same_size(task, [image], device)[0]
    except Exception as err:  # answered to this request alone
        return _failure(image, err)


def _failure(image: np.ndarray, err: Exception) -> dict[str, Any]:
    """The answer to a request whose image the model failed on."""
    size = f"{image.shape[1]} x {image.shape[0]}"
    if isinstance(err, torch.OutOfMemoryError):
        torch.cuda.empty_cache()
        return {"status": 413, "detail": f"The {size} image did not fit in the memory the server has left. Send a "
                                         "smaller image."}  # fmt: skip
    return {"status": 500, "detail": f"The model failed on this {size} image ({type(err).__name__}: {err})."}


@torch.no_grad()
def _predict_same_size(task: Any, images: list[np.ndarray], device: str) -> list[dict[str, Any]]:
    kind = type(task).__name__.removesuffix("Task").lower()
    batch = torch.stack([torch.from_numpy(image).permute(2, 0, 1) for image in images]).float().div(255).to(device)
    if kind == "segmentation":  # as val, test and predict compute it: the task's inference (windows, flip, scales)
        from vitdense.tasks.inference import infer_logits

        logits = infer_logits(task, batch, task.inference_cfg, task.input_size())
        return [_segmentation_answer(task, classes) for classes in task.classes_of(logits).cpu().numpy()]
    if kind == "classification":
        return [{"label": int(probs.argmax()), "class_name": task.class_names[int(probs.argmax())],
                 "score": float(probs.max()), "probs": [round(float(p), 6) for p in probs]}
                for probs in task(batch).softmax(-1).cpu().numpy()]  # fmt: skip
    return [_detection_answer(task, det) for det in task(list(batch))]


def _segmentation_answer(task: Any, classes: np.ndarray) -> dict[str, Any]:
    image = Image.fromarray(classes.astype(np.uint8) if task.num_classes <= 256 else classes.astype(np.uint16))
    if task.num_classes <= 256:
        image.putpalette(task.palette())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    counts = np.bincount(classes.reshape(-1), minlength=task.num_classes)
    return {"mask_png": base64.b64encode(buffer.getvalue()).decode(), "size": list(classes.shape),
            "pixels": {name: int(c) for name, c in zip(task.class_names, counts, strict=True) if c}}  # fmt: skip


def _detection_answer(task: Any, det: dict[str, torch.Tensor]) -> dict[str, Any]:
    labels = det["labels"].cpu().tolist()
    answer = {"boxes": [[round(v, 2) for v in box] for box in det["boxes"].cpu().tolist()],
              "scores": [round(s, 5) for s in det["scores"].cpu().tolist()], "labels": labels,
              "class_names": [task.class_names[k] for k in labels]}  # fmt: skip
    if "masks" in det:
        from pycocotools import mask as mask_utils

        masks = (det["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0))) if len(masks) else []
        answer["masks"] = [{"size": r["size"], "counts": r["counts"].decode()} for r in rles]
    return answer


def serve_main(args: list[str]) -> str:
    """``vitdense serve --model export.safetensors`` (or ``--config X --ckpt_path Y``) ``[--port 8000]``."""
    parser = argparse.ArgumentParser(
        prog="vitdense serve",
        description="Serve a trained model over HTTP (LitServe): POST /predict with an image (JSON base64 or a "
        "multipart file), GET /health. Every other argument is a `fit` argument (--model.*, --data.*).",
    )
    parser.add_argument("--model", help="a `vitdense export --format safetensors` file")
    parser.add_argument("--config", help="the config the checkpoint was trained with (with --ckpt_path)")
    parser.add_argument("--ckpt_path", help="the checkpoint to serve (with --config)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--max_batch_size", type=int, default=8, help="requests batched into one predict call")
    parser.add_argument("--batch_timeout", type=float, default=0.02, help="seconds a batch waits to fill")
    parser.add_argument("--max_pixels", type=int, default=None,
                        help="images of this many pixels or more are refused (default: from the memory the server "
                        "has and the model's estimated inference memory)")  # fmt: skip
    parser.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "cuda"))
    own, rest = parser.parse_known_args(args)
    import litserve as ls

    from vitdense.engine.restore import load_for_inference

    load = {"model_file": own.model, "config": own.config, "ckpt_path": own.ckpt_path, "overrides": rest}
    task = load_for_inference(**load, error=parser.error)  # here too: bad arguments fail before the server starts
    limits = {"in_chans": task.backbone.in_chans, "max_pixels": own.max_pixels, "min_side": min_image_side(task)}
    if own.max_pixels is None:
        memory, where = free_memory(own.accelerator)
        limits["max_pixels"] = default_max_pixels(task, memory)
        source = f"from {memory / 2**30:.1f} GiB of free {where} memory and the estimated inference memory"
    else:
        source = "--max_pixels"
    print(f"[vitdense] images of {limits['max_pixels']} pixels or more are refused ({source}); images need at least "
          f"{limits['min_side']} pixels on each side (the smallest the model takes)", flush=True)  # fmt: skip
    api = VitdenseAPI(load, own.max_batch_size, own.batch_timeout, limits)
    kind = type(task).__name__
    del task
    server = ls.LitServer(api, accelerator=own.accelerator, middlewares=[(ValidateImages, limits)],
                          workers_per_device=1)  # fmt: skip
    print(f"[vitdense] serving {kind} on http://{own.host}:{own.port}/predict", flush=True)
    main_pid = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() != main_pid:  # a process forked from this one: the default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt  # LitServe's run shuts its processes down on it; Python's SIGTERM would not

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.run(host=own.host, port=own.port, generate_client_file=False)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl+C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_children()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
    return "stopped"


def stop_children(timeout: float = 5.0) -> None:
    """End every process this one started (LitServe's workers, API servers, manager) and theirs: SIGTERM, then
    SIGKILL after ``timeout`` seconds. LitServe's own shutdown can leave one behind when it is interrupted."""
    procs = multiprocessing.active_children()
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the dev extras; multiprocessing's own list suffices
        psutil = None
    others = psutil.Process().children(recursive=True) if psutil else []
    for proc in procs:
        proc.terminate()
    for proc in others:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    for proc in procs:
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(1)
    if psutil:
        _, alive = psutil.wait_procs(others, timeout=timeout)
        for proc in alive:
            proc.kill()


@torch.no_grad()
def min_image_side(task: Any) -> int:
    """The smallest side (pixels) of an image the model takes, found by trying: from the coarsest stride of its
    pyramid (where one cell must remain), down to the smallest side that works beside that stride. Detectors
    resize every image (only an extreme aspect ratio can fail them, alone: see ``predict_images``): 1."""
    if task.backbone.in_chans != 3 or hasattr(task, "detector"):
        return 1  # an in_chans != 3 model: the endpoint refuses every image (see decode_image)
    strides = [s for m in task.modules() for s in getattr(m, "strides", None) or [] if isinstance(s, int)]
    coarsest = max([task.backbone.size_divisor, *strides])

    def works(h: int, w: int) -> bool:
        try:
            _predict_same_size(task, [np.zeros((h, w, 3), np.uint8)], "cpu")
        except Exception:  # any failure means "too small"
            return False
        return True

    for _ in range(4):
        if works(coarsest, coarsest):
            break
        coarsest *= 2
    else:
        raise RuntimeError(f"The model fails on a {coarsest // 2} x {coarsest // 2} image, larger than its coarsest "
                           "stride: it cannot serve images.")  # fmt: skip
    if works(1, coarsest) and works(coarsest, 1):  # padded to the stride (classification, Swin)
        return 1
    low, high = 2, coarsest  # high works; find the smallest side that does
    while low < high:
        mid = (low + high) // 2
        if works(mid, coarsest) and works(coarsest, mid):
            high = mid
        else:
            low = mid + 1
    return high
