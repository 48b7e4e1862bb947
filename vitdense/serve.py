"""``vitdense serve``: a trained model behind an HTTP endpoint on LitServe.

``POST /predict`` takes one image, as JSON ``{"image": "<base64 of the file>"}`` or as a multipart file upload
(field ``image`` or ``file``), and answers JSON: segmentation ``{"mask_png": <base64 palette PNG of class ids>,
"size": [h, w], "pixels": {class: count}}``, classification ``{"label", "class_name", "score", "probs"}``,
detection ``{"boxes" (xyxy pixels), "scores", "labels", "class_names"}`` (and COCO RLE ``"masks"`` for instance
segmentation). Concurrent requests are batched (``--max_batch_size``, ``--batch_timeout``); images of one size run as
one forward. An image that cannot be served (not an image, too large, the wrong band count) gets a 4xx with the
reason before it reaches the model, so it never fails the requests batched with it, and the server stays up.
``GET /health`` answers ``ok`` once the model is loaded.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
from typing import Any

import numpy as np
import torch
from PIL import Image

MAX_PIXELS = 64_000_000


def decode_image(body: bytes, content_type: str, in_chans: int = 3, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The (H, W, 3) uint8 image of a request body; ValueError(<status>, <message>) for what cannot be served."""
    if content_type.startswith("application/json"):
        try:
            payload = json.loads(body or b"{}")
            raw = base64.b64decode(payload["image"], validate=True)
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(400, 'Send JSON {"image": "<base64 of an image file>"} or a multipart file field '
                                  f"'image' ({type(err).__name__}: {err}).") from err  # fmt: skip
    else:
        raw = body
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > max_pixels:
                raise ValueError(413, f"The image is {img.width} x {img.height} pixels; this server takes at most "
                                      f"{max_pixels} pixels (--max_pixels).")  # fmt: skip
            img.load()
            bands = len(img.getbands())
            if in_chans == 3 and img.mode not in ("RGB", "L", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F"):
                raise ValueError(415, f"Image mode {img.mode!r} cannot be read as RGB.")
            if in_chans != 3:
                raise ValueError(415, f"The model takes {in_chans} bands; this endpoint serves 8-bit RGB images "
                                      f"(this one has {bands}). Use `vitdense scene` for rasters.")  # fmt: skip
            return np.asarray(img.convert("RGB"))
    except ValueError:
        raise
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(415, f"The body is not an image this server can read ({err}).") from err


async def _multipart_image(scope: dict, body: bytes) -> bytes:
    from starlette.requests import Request

    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(scope, receive).form()
    upload = form.get("image") or form.get("file")
    if upload is None or isinstance(upload, str):
        raise ValueError(400, "The multipart form has no file field 'image' (or 'file').")
    return await upload.read()


class ValidateImages:
    """ASGI middleware: reads a ``/predict`` request, answers a 4xx for an image the model cannot take, and hands
    every other request on unchanged (its body replayed), so a bad request never reaches a batch."""

    def __init__(self, app: Any, in_chans: int = 3, max_pixels: int = MAX_PIXELS, max_bytes: int = 256 * 2**20):
        self.app, self.in_chans, self.max_pixels, self.max_bytes = app, in_chans, max_pixels, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/predict"):
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._refuse(send, 413, f"The request is over {self.max_bytes} bytes.")
                return
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        content_type = headers.get("content-type", "")
        try:
            if content_type.startswith("multipart/"):
                decode_image(await _multipart_image(scope, body), "", self.in_chans, self.max_pixels)
            elif content_type.startswith("application/json"):
                decode_image(body, content_type, self.in_chans, self.max_pixels)
            else:
                raise ValueError(415, f"Content type {content_type or 'none'!r}: send JSON {{\"image\": \"<base64 "
                                      "of an image file>\"}} or a multipart file field 'image'.")  # fmt: skip
        except ValueError as err:
            status, message = err.args if len(err.args) == 2 else (400, str(err))
            await self._refuse(send, int(status), str(message))
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Any, status: int, message: str) -> None:
        payload = json.dumps({"detail": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


try:  # the API class must live at module level: LitServe pickles it into its worker process
    from litserve import LitAPI as _LitAPI
except ImportError:  # pragma: no cover - litserve is in the dev/serve extras
    _LitAPI = object


class VitdenseAPI(_LitAPI):  # type: ignore[misc, valid-type]
    """LitServe API of a vitdense task, loaded in the worker (``load`` arguments of ``load_for_inference``)."""

    def __init__(self, load: dict[str, Any], max_batch_size: int = 8, batch_timeout: float = 0.02) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.load = load

    def setup(self, device: str) -> None:
        from vitdense.restore import load_for_inference

        self.task = load_for_inference(**self.load).to(device).eval()
        self.device_name = device

    def decode_request(self, request: Any) -> np.ndarray:
        if isinstance(request, dict):
            return decode_image(json.dumps(request).encode(), "application/json")
        upload = request.get("image") or request.get("file")  # multipart form (validated by the middleware)
        return decode_image(upload.file.read(), "")

    def batch(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return inputs  # images differ in size: predict groups them

    def predict(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        return predict_images(self.task, images, self.device_name)

    def unbatch(self, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return outputs

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


if _LitAPI is not object:  # LitServe hands decode_request the parsed JSON body or form for a Request annotation
    from starlette.requests import Request

    VitdenseAPI.decode_request.__annotations__["request"] = Request


@torch.no_grad()
def predict_images(task: Any, images: list[np.ndarray], device: str = "cpu") -> list[dict[str, Any]]:
    """JSON-able predictions of (H, W, 3) uint8 images, each run at its own size (same-size images together)."""
    from vitdense.tasks.base import group_indices

    kind = type(task).__name__.removesuffix("Task").lower()
    out: list[dict[str, Any]] = [{} for _ in images]
    for idx in group_indices(image.shape for image in images):
        batch = torch.stack([torch.from_numpy(images[i]).permute(2, 0, 1) for i in idx]).float().div(255).to(device)
        if kind == "segmentation":
            for i, classes in zip(idx, task(batch).argmax(1).cpu().numpy(), strict=True):
                out[i] = _segmentation_answer(task, classes)
        elif kind == "classification":
            for i, probs in zip(idx, task(batch).softmax(-1).cpu().numpy(), strict=True):
                label = int(probs.argmax())
                out[i] = {"label": label, "class_name": task.class_names[label], "score": float(probs[label]),
                          "probs": [round(float(p), 6) for p in probs]}  # fmt: skip
        else:
            for i, det in zip(idx, task(list(batch)), strict=True):
                out[i] = _detection_answer(task, det)
    return out


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
    parser.add_argument("--max_pixels", type=int, default=MAX_PIXELS, help="largest image served (pixels)")
    parser.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "cuda"))
    own, rest = parser.parse_known_args(args)
    import litserve as ls

    from vitdense.restore import load_for_inference

    load = {"model_file": own.model, "config": own.config, "ckpt_path": own.ckpt_path, "overrides": rest}
    task = load_for_inference(**load, error=parser.error)  # here too: bad arguments fail before the server starts
    api = VitdenseAPI(load, own.max_batch_size, own.batch_timeout)
    middleware = (ValidateImages, {"in_chans": task.backbone.in_chans, "max_pixels": own.max_pixels})
    kind = type(task).__name__
    del task
    server = ls.LitServer(api, accelerator=own.accelerator, middlewares=[middleware], workers_per_device=1)
    print(f"[vitdense] serving {kind} on http://{own.host}:{own.port}/predict", flush=True)
    server.run(host=own.host, port=own.port, generate_client_file=False)
    return "stopped"
