"""vitdense serve: the real server process answers concurrent requests with what the model predicts, refuses bad
input with a 4xx that names the problem, and keeps serving."""

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny import VIT_D2_W32
from vitdense import SegmentationTask
from vitdense.export import export_safetensors, load
from vitdense.serve import decode_image, predict_images

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
        for _ in range(120):
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
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
