"""What one request to ``vitdense serve`` may be: the image decoded and checked before it reaches the model
(``decode_image``, and ``ValidateImages`` in front of the app, which answers 4xx alone), and the largest image the
server's memory takes (``vitdense estimate``'s inference memory with ``HEADROOM``)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from PIL import Image

# `estimate`'s inference memory counts one layer's input and output (and the weights); a whole forward keeps more
# alive at once: 3.2x the estimate's activations for a ViT-S UPerNet at 1024 x 1024 on CPU (2.0 GiB measured).
HEADROOM = 4.0


def decode_image(body: bytes, content_type: str, in_chans: int = 3, max_pixels: int | None = None,
                 min_side: int = 1) -> np.ndarray:  # fmt: skip
    """The (H, W, 3) uint8 image of a request body; ValueError(<status>, <message>) for what cannot be served:
    ``max_pixels`` pixels or more (exclusive, checked on the header before decoding), a side under ``min_side``."""
    if content_type.startswith("application/json"):
        try:
            payload = json.loads(body or b"{}")
            raw = base64.b64decode(payload["image"], validate=True)
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(400, 'Send JSON {"image": "<base64 of an image file>"} or a multipart file field '
                                  f"'image' ({type(err).__name__}: {err}).") from err  # fmt: skip
    else:
        raw = body
    if max_pixels is not None and (Image.MAX_IMAGE_PIXELS or math.inf) < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's bomb check below the server's own would refuse valid images
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if max_pixels is not None and img.width * img.height >= max_pixels:
                raise ValueError(413, f"The image is {img.width} x {img.height} = {img.width * img.height} pixels; "
                                      f"this server takes images of fewer than {max_pixels} pixels (--max_pixels). "
                                      "Send a smaller image.")  # fmt: skip
            if min(img.width, img.height) < min_side:
                raise ValueError(422, f"The image is {img.width} x {img.height} pixels; this model needs at least "
                                      f"{min_side} pixels on each side. Send a larger image (or pad it).")  # fmt: skip
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
    except Image.DecompressionBombError as err:
        raise ValueError(413, f"{err} This server takes images of fewer than {max_pixels} pixels.") from err
    except (OSError, SyntaxError) as err:
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


class ImageLimits(TypedDict):
    """``decode_image``'s limits on an image."""

    in_chans: int
    max_pixels: int | None
    min_side: int


class ValidateImages:
    """ASGI middleware: reads a ``/predict`` request, answers a 4xx for an image the model cannot take, and hands
    every other request on unchanged (its body replayed), so a bad request never reaches a batch."""

    def __init__(self, app: Any, in_chans: int = 3, max_pixels: int | None = None, min_side: int = 1,
                 max_bytes: int = 256 * 2**20) -> None:  # fmt: skip
        self.app, self.in_chans, self.max_bytes = app, in_chans, max_bytes
        self.limits = ImageLimits(in_chans=in_chans, max_pixels=max_pixels, min_side=min_side)

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
                decode_image(await _multipart_image(scope, body), "", **self.limits)
            elif content_type.startswith("application/json"):
                decode_image(body, content_type, **self.limits)
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


def default_max_pixels(task: Any, memory: float, headroom: float = HEADROOM) -> int:
    """The pixel count at which one image's inference memory (``vitdense estimate``'s: the weights plus the largest
    layer's input and output, times ``headroom``) reaches ``memory`` bytes: the default ``--max_pixels``."""
    from vitdense.cost.estimate import inference_estimate

    sides = (256, 512)  # multiples of every pyramid stride: the estimate is linear in pixels between them
    small, large = (inference_estimate(task, (s, s)) for s in sides)
    weights = large.inference_bytes() - max(s.infer_bytes for s in large.stages)
    act = [e.inference_bytes() - weights for e in (small, large)]
    per_pixel = (act[1] - act[0]) / (sides[1] ** 2 - sides[0] ** 2)
    fixed = act[0] - per_pixel * sides[0] ** 2
    pixels = (memory - weights - headroom * fixed) / (headroom * per_pixel)
    if pixels < 1:
        raise SystemExit(f"vitdense serve: the model's weights ({weights / 2**30:.2f} GiB) leave no room in the "
                         f"{memory / 2**30:.2f} GiB free for an image; free memory, or pass --max_pixels.")  # fmt: skip
    return math.ceil(pixels)


def free_memory(accelerator: str) -> tuple[float, str]:
    """Bytes the server may use, and where: free memory of GPU 0 for CUDA (asked in a child process, so that this
    one holds no CUDA context), else available host memory (within a cgroup's limit)."""
    if accelerator == "cuda" or (accelerator == "auto" and torch.cuda.is_available()):
        import subprocess
        import sys

        code = "import torch; print(torch.cuda.mem_get_info(0)[0])"
        free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        return float(free), "GPU"
    try:
        import psutil

        available = float(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover
        available = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    cgroup = Path("/sys/fs/cgroup")
    with contextlib.suppress(OSError, ValueError):
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            available = min(available, int(limit) - int((cgroup / "memory.current").read_text()))
    return available, "host"
