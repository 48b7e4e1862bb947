"""vitdense serve: the real server process answers concurrent requests with what the model predicts, refuses bad
input with a 4xx that names the problem, and keeps serving."""

import base64
import contextlib
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny import VIT_D2_W32
from vitdense import SegmentationTask
from vitdense.deploy.export import export_safetensors, load
from vitdense.deploy.serve import decode_image, predict_images

pytest.importorskip("litserve")
requests = pytest.importorskip("requests")


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_images_are_refused_with_their_reason() -> None:
    with pytest.raises(ValueError) as err:
        decode_image(b"not an image", "image/png")
    assert err.value.args[0] == 415 and "not an image" in err.value.args[1]
    with pytest.raises(ValueError) as err:
        decode_image(b'{"picture": 1}', "application/json")
    assert err.value.args[0] == 400 and '{"image"' in err.value.args[1]
    with pytest.raises(ValueError) as err:
        decode_image(png(np.zeros((40, 40, 3), np.uint8)), "image/png", max_pixels=1000)
    assert err.value.args[0] == 413 and "40 x 40" in err.value.args[1]
    image = np.random.default_rng(0).integers(0, 255, (9, 11, 3), dtype=np.uint8)
    body = ('{"image": "' + base64.b64encode(png(image)).decode() + '"}').encode()
    assert np.array_equal(decode_image(body, "application/json"), image)


@pytest.mark.slow  # starts a server process: ~30 s
def test_the_server_answers_32_concurrent_requests_and_survives_bad_input(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = SegmentationTask(backbone=VIT_D2_W32, num_classes=4, img_size=32, head={"channels": 8}).eval()
    model = export_safetensors(task, tmp_path / "model")
    port = free_port()
    # Its own process group, so that LitServe's worker processes end with it.
    server = subprocess.Popen([sys.executable, "-m", "vitdense", "serve", "--model", str(model), "--port", str(port),
                               "--accelerator", "cpu", "--max_batch_size", "8"], start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # starting LitServe's processes took over 60 s on 2 busy cores
        while True:
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 255, (32 + 8 * (i % 3), 40, 3), dtype=np.uint8) for i in range(32)]

        def ask(i: int) -> dict:
            if i % 2:  # half as JSON base64, half as a file upload
                response = requests.post(f"{url}/predict", files={"image": ("a.png", png(images[i]))}, timeout=120)
            else:
                response = requests.post(f"{url}/predict", json={"image": base64.b64encode(png(images[i])).decode()},
                                         timeout=120)  # fmt: skip
            assert response.status_code == 200, response.text
            return response.json()

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(ask, range(32)))
        expected = predict_images(load(model), images)
        for answer, want in zip(answers, expected, strict=True):
            got = np.array(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"]))))
            assert np.array_equal(got, np.array(Image.open(io.BytesIO(base64.b64decode(want["mask_png"])))))
        bad = requests.post(f"{url}/predict", files={"image": ("a.png", b"garbage")}, timeout=30)
        assert bad.status_code == 415 and "not an image" in bad.json()["detail"]
        assert requests.post(f"{url}/predict", json={"img": 1}, timeout=30).status_code == 400
        raw = requests.post(f"{url}/predict", data=png(images[0]), headers={"content-type": "image/png"}, timeout=30)
        assert raw.status_code == 415 and "send JSON" in raw.json()["detail"]
        assert ask(0)["size"] == [32, 40]  # still serving
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def png_header(width: int, height: int) -> bytes:
    """A PNG that states its size and holds almost no pixels: the server must refuse it on the header alone."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def tiny_segmenter() -> SegmentationTask:
    torch.manual_seed(0)
    return SegmentationTask(backbone=VIT_D2_W32, num_classes=4, img_size=32, head={"channels": 8}).eval()


def mask(answer: dict) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"]))))


def test_an_image_the_model_fails_on_fails_alone() -> None:
    task = tiny_segmenter()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (1, 1, 3), dtype=np.uint8)] + [
        rng.integers(0, 255, shape, dtype=np.uint8) for shape in [(32, 40, 3), (1, 1, 3), (32, 40, 3), (48, 24, 3)]
    ]
    answers = predict_images(task, images)
    for i, (image, answer) in enumerate(zip(images, answers, strict=True)):
        if image.shape[0] == 1:
            assert answer["status"] == 500 and "1 x 1 image" in answer["detail"], answer
        else:  # what it gets alone
            assert np.array_equal(mask(answer), mask(predict_images(task, [image])[0])), i
    # Same-size images run together, never more than max_pixels at once.
    assert [mask(a).shape for a in predict_images(task, images[1:2] * 3, max_pixels=2 * 32 * 40)] == [(32, 40)] * 3


def test_served_masks_use_the_models_inference_settings() -> None:
    """A model set to score by windows (or flips, scales) is served the way its val, test and predict ran it, not
    by one whole-image forward (which gives other masks: the served model would not be the one measured)."""
    from vitdense.tasks.inference import infer_logits

    task = tiny_segmenter()
    with torch.no_grad():  # weights that give a varied map (the initial head predicts about one class everywhere)
        for param in task.parameters():
            param.normal_(0, 0.3)
    task.inference_cfg = {**task.inference_cfg, "mode": "slide", "stride": [16, 16], "flip": True}
    image = np.random.default_rng(1).integers(0, 255, (56, 72, 3), dtype=np.uint8)
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = infer_logits(task, batch, task.inference_cfg, task.input_size()).argmax(1)[0].numpy()
        whole = task(batch).argmax(1)[0].numpy()
    assert not np.array_equal(expected, whole)  # the settings matter for this model and image
    assert np.array_equal(mask(predict_images(task, [image])[0]), expected)


def test_limits_come_from_the_model_and_its_estimated_memory() -> None:
    from vitdense.cost.estimate import inference_estimate
    from vitdense.deploy.serve import HEADROOM, default_max_pixels, min_image_side

    task = tiny_segmenter()
    side = min_image_side(task)
    assert side == 17  # patch 16, pyramid to stride 32: two patches per side; checked by trying below
    with torch.no_grad():
        task(torch.zeros(1, 3, side, 40))
        with pytest.raises(RuntimeError):
            task(torch.zeros(1, 3, side - 1, 40))
    with pytest.raises(ValueError) as err:
        decode_image(png(np.zeros((16, 40, 3), np.uint8)), "image/png", min_side=side)
    assert err.value.args[0] == 422 and "at least 17 pixels" in err.value.args[1]
    # At the limit is refused: max_pixels is exclusive, checked on the header (nothing decoded).
    with pytest.raises(ValueError) as err:
        decode_image(png_header(8000, 8000), "image/png", max_pixels=8000 * 8000)
    assert err.value.args[0] == 413 and "8000 x 8000" in err.value.args[1]
    memory = 2**30
    limit = default_max_pixels(task, memory)
    weights = 4 * sum(p.numel() for p in task.parameters())

    def need(pixels: int) -> float:  # the estimate's inference memory of one square image, with the headroom
        s = int(pixels**0.5)
        return weights + HEADROOM * (inference_estimate(task, (s, s)).inference_bytes() - weights)

    assert need(int(limit * 0.95)) < memory < need(int(limit * 1.05))


def serve(model: Path, port: int, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    """The real server in its own process group, and the lines it printed until /health answered."""
    server = subprocess.Popen([sys.executable, "-m", "vitdense", "serve", "--model", str(model), "--port", str(port),
                               "--accelerator", "cpu", *extra], start_new_session=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(server.stdout), daemon=True).start()
    deadline = time.monotonic() + 600  # starting LitServe's processes took over 60 s on 2 busy cores
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server, lines
        except requests.ConnectionError:
            pass
        assert server.poll() is None, "".join(lines)
        time.sleep(0.25)
    raise AssertionError("the server did not start:\n" + "".join(lines))


@pytest.mark.slow  # starts a server process and stops it: 46 s on 2 busy cores, most of it LitServe's start and stop
def test_the_server_isolates_bad_requests_and_stops_all_its_processes(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    task = tiny_segmenter()
    model = export_safetensors(task, tmp_path / "model")
    port = free_port()
    server, lines = serve(model, port, "--batch_timeout", "0.5")  # wide enough that the 8 requests batch
    url = f"http://127.0.0.1:{port}/predict"
    processes = psutil.Process(server.pid).children(recursive=True)
    try:
        said = next(line for line in lines if "pixels or more are refused" in line)
        limit = int(said.split("images of ")[1].split()[0])
        assert "GiB of free host memory" in said and "at least 17 pixels" in said
        rng = np.random.default_rng(0)
        shapes = [(32, 40), (32, 40), (48, 40), (17, 50), (50, 17), (32, 40), (64, 64), (1, 1)]
        images = [rng.integers(0, 255, (*shape, 3), dtype=np.uint8) for shape in shapes]

        def ask(image: np.ndarray) -> requests.Response:
            return requests.post(url, files={"image": ("a.png", png(image))}, timeout=60)

        with ThreadPoolExecutor(len(images)) as pool:
            responses = list(pool.map(ask, images))
        assert [r.status_code for r in responses] == [200] * 7 + [422], [r.text for r in responses]
        assert "at least 17 pixels" in responses[-1].json()["detail"]
        for image, response in zip(images, responses[:7], strict=False):
            assert np.array_equal(mask(response.json()), mask(predict_images(task, [image])[0]))
        rss = sum(p.memory_info().rss for p in processes)
        width = -(-limit // 1000)  # width x 1000 >= the limit: refused on its header, before anything is decoded
        huge = requests.post(url, files={"image": ("a.png", png_header(width, 1000))}, timeout=60)
        assert huge.status_code == 413 and f"fewer than {limit} pixels" in huge.json()["detail"], huge.text
        assert sum(p.memory_info().rss for p in processes) < rss + 64 * 2**20
        assert ask(images[0]).status_code == 200  # still serving
    finally:
        server.send_signal(signal.SIGTERM)  # to the server alone: it must end every process it started
        try:
            server.wait(timeout=60)
        finally:
            alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            with contextlib.suppress(ProcessLookupError):  # whatever is left, so that no test leaves a process
                os.killpg(server.pid, signal.SIGKILL)
    assert not alive, [p.pid for p in alive]
