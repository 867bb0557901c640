"""`pgdm serve`'s HTTP API against live servers on 127.0.0.1 with httpx: answers equal the CLI's, concurrent
clients are batched and all answered, bad and oversized requests get one-line 4xx errors, auth, queue full."""
import base64
import io
import json
import threading

import httpx
import numpy as np
import pytest
from PIL import Image

from serve_helpers import STEPS, metric
from pgdm.entrypoints.cli import main as pgdm_main

CLIENT_TIMEOUT = 1800  # an upper bound for a stuck server, never reached by a working one


def post(url, task, image, *, mask=None, accept=None, token=None, **fields):
    files = {"image": (image.name, image.read_bytes())}
    if mask is not None:
        files["mask"] = (mask.name, mask.read_bytes())
    headers = {"Accept": accept} if accept else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = {"task": task, **{k: str(v) for k, v in fields.items()}}
    return httpx.post(f"{url}/v1/restore", data=data, files=files, headers=headers, timeout=CLIENT_TIMEOUT)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def assert_one_line_error(r, status):
    assert r.status_code in ({status} if isinstance(status, int) else status), r.text
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"], body


def inputs(folder):
    return sorted(p for p in folder.iterdir() if not p.stem.endswith("_mask"))


@pytest.mark.parametrize(
    "task, cli_args, fields",
    [
        ("sr2", [], {}),
        ("jpeg20", [], {}),
        ("inpaint-center", [], {}),
        ("denoise", ["--sigma-y", "0.05"], {"sigma_y": 0.05}),
        ("sr2", ["--num-samples", "2", "--eta", "0.5"], {"num_samples": 2, "eta": 0.5}),
    ],
)
def test_answers_equal_cli(task, cli_args, fields, model_path, degraded, start_server, tmp_path):
    """Each request alone (batch 1) gives the PNG `pgdm restore --batch-size 1` writes, bit for bit."""
    folder = degraded[task]
    out = tmp_path / "cli"
    argv = ["restore", task, str(folder), "-o", str(out), "--model", str(model_path), "--steps", str(STEPS), "--seed", "3", "--batch-size", "1", "--quiet"]
    assert pgdm_main(argv + cli_args) == 0
    cli_metrics = json.loads((out / "metrics.json").read_text())
    server = start_server()
    for i, path in enumerate(inputs(folder)):
        mask = path.with_name(path.stem + "_mask.png")
        r = post(server.url, task, path, mask=mask if mask.exists() else None, accept="application/json", seed=3 + i, **fields)
        assert r.status_code == 200, r.text
        body = r.json()
        assert np.array_equal(pixels(base64.b64decode(body["image"])), pixels((out / f"{path.stem}.png").read_bytes()))
        assert body["consistency_rms"] == pytest.approx(cli_metrics[path.stem]["consistency_rms"], rel=1e-6, abs=1e-9)
        png = post(server.url, task, path, mask=mask if mask.exists() else None, seed=3 + i, **fields)
        assert png.headers["content-type"] == "image/png" and png.content == base64.b64decode(body["image"])


def test_concurrent_clients_batched_none_lost(degraded, start_server):
    """32 clients at once: 32 answers, each the one for its own seed; batches of more than one request formed."""
    server = start_server(max_batch=8, max_wait_ms=200)
    image = inputs(degraded["sr2"])[0]
    answers: dict[int, list] = {seed: [] for seed in range(32)}
    start = threading.Barrier(32)

    def client(seed):
        start.wait()
        answers[seed].append(post(server.url, "sr2", image, seed=seed))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    text = httpx.get(f"{server.url}/metrics").text
    batches, single = metric(text, "pgdm_batch_size_count"), metric(text, "pgdm_batch_size_bucket", le="1.0")
    assert batches < 32 and batches - single > 0, text  # fewer batches than requests, some larger than 1
    assert metric(text, "pgdm_requests_total", endpoint="/v1/restore", status="200") == 32
    assert metric(text, "pgdm_queue_depth") == 0 and metric(text, "pgdm_requests_in_flight") == 0
    assert all(len(got) == 1 and got[0].status_code == 200 for got in answers.values()), answers
    for seed in range(0, 32, 4):
        got = answers[seed]
        alone = post(server.url, "sr2", image, seed=seed)  # batch 1
        # batched rows differ from batch 1 by the network's float32 rounding: at most one 8-bit level
        diff = np.abs(pixels(got[0].content).astype(int) - pixels(alone.content).astype(int))
        assert diff.max() <= 1, (seed, diff.max())
    assert len({r[0].content for r in answers.values()}) == 32  # every seed its own sample


def test_concurrent_uploads_of_any_size_batch_as_canvases(start_server, tmp_path):
    """Eight clients upload SR×2 measurements at once, six 12×20 and two 20×12: each is restored at twice its size
    (a 24×40 or 40×24 canvas of 20 shifted 16×16 tiles), the canvases of one size run as one batch (their tiles rows
    of the same network calls), and each answer is the upload restored alone up to the network's batch-size
    rounding (one 8-bit level)."""
    server = start_server(max_batch=8, max_wait_ms=2000)
    shapes = [(12, 20)] * 6 + [(20, 12)] * 2  # (H, W) of the uploads
    for seed, (h, w) in enumerate(shapes):
        yy, xx = np.mgrid[:h, :w]
        Image.fromarray((127 + 100 * np.sin((xx + seed) / 3.0) * np.cos(yy / 4.0)).astype(np.uint8), mode="L").save(tmp_path / f"up{seed}.png")
    answers: dict[int, httpx.Response] = {}
    start = threading.Barrier(len(shapes))

    def client(seed):
        start.wait()
        answers[seed] = post(server.url, "sr2", tmp_path / f"up{seed}.png", seed=seed)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(len(shapes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(answers[seed].status_code == 200 for seed in range(len(shapes))), {s: r.text[:200] for s, r in answers.items()}
    text = httpx.get(f"{server.url}/metrics").text
    batches = metric(text, "pgdm_batch_size_count")
    assert metric(text, "pgdm_batch_size_sum") == len(shapes) and batches < len(shapes), text  # rows = canvases
    assert metric(text, "pgdm_batch_size_bucket", le="4.0") < batches, "a batch of more than 4 canvases: the six 24×40 ones"
    for seed in (0, 5, 6):
        h, w = shapes[seed]
        got = pixels(answers[seed].content)
        assert got.shape == (2 * h, 2 * w)
        alone = pixels(post(server.url, "sr2", tmp_path / f"up{seed}.png", seed=seed).content)  # a batch of 1
        assert np.abs(got.astype(int) - alone.astype(int)).max() <= 1, seed
    assert len({r.content for r in answers.values()}) == len(shapes)


def test_bad_requests_answer_one_line_4xx(degraded, start_server, tmp_path):
    server = start_server(max_body_bytes=200_000, max_pixels=64 * 64, max_steps=50)
    url, png = server.url, inputs(degraded["sr2"])[0]
    cases = {
        "garbage.png": (b"not an image at all", 400),
        "anim.gif": (None, 415),
        "big.png": (None, 413),
        "big_restored.png": (None, 413),
    }
    Image.new("L", (8, 8)).save(tmp_path / "anim.gif")
    Image.new("L", (100, 100)).save(tmp_path / "big.png")  # 10 000 pixels > 64 × 64
    Image.new("L", (40, 40)).save(tmp_path / "big_restored.png")  # 1600 pixels, but SR×2 restores 80 × 80 > 64 × 64
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    for name, (_, status) in cases.items():
        assert_one_line_error(post(url, "sr2", tmp_path / name), status)
    Image.new("L", (7, 5)).save(tmp_path / "non_square.png")  # restored at its own size: 14 × 10, not the model's 16 × 16
    answer = post(url, "sr2", tmp_path / "non_square.png")
    assert answer.status_code == 200 and Image.open(io.BytesIO(answer.content)).size == (14, 10)
    assert Image.open(io.BytesIO(post(url, "sr2", tmp_path / "non_square.png", fit="resize").content)).size == (16, 16)
    assert_one_line_error(post(url, "no-such-task", png), 400)
    assert_one_line_error(post(url, "jpeg20", png), 400)  # a JPEG task needs the .jpg
    assert_one_line_error(post(url, "sr2", png, mask=png), 400)  # a mask for a task without inpainting
    assert_one_line_error(post(url, "jpeg20", inputs(degraded["jpeg20"])[0], sigma_y=0.1), 400)  # noise needs a linear task
    assert_one_line_error(post(url, "sr2", png, steps=51), 422)
    assert_one_line_error(post(url, "sr2", png, seed="abc"), 422)
    assert_one_line_error(post(url, "sr2", png, sigma_y=-1), 422)
    assert_one_line_error(post(url, "sr2", png, class_label=3), 400)  # an unconditional model
    assert_one_line_error(httpx.post(f"{url}/v1/restore", data={"task": "sr2"}), 422)  # no image
    assert_one_line_error(httpx.post(f"{url}/v1/restore", content=b"{}", headers={"Content-Type": "application/json"}), 422)
    assert_one_line_error(httpx.post(f"{url}/v1/restore", content=b"--x\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=x"}), {400, 422})
    assert_one_line_error(httpx.get(f"{url}/v1/nothing"), 404)
    assert_one_line_error(httpx.get(f"{url}/v1/restore"), 405)
    # over the byte limit: refused from the Content-Length, or while reading a chunked body
    big = {"task": "sr2"}, {"image": ("y.png", bytes(300_000))}
    assert_one_line_error(httpx.post(f"{url}/v1/restore", data=big[0], files=big[1]), 413)
    head = b'--x\r\nContent-Disposition: form-data; name="image"; filename="y.png"\r\nContent-Type: image/png\r\n\r\n'
    chunks = (part for part in [head, *[bytes(50_000)] * 10, b"\r\n--x--\r\n"])  # a generator: sent chunked
    assert_one_line_error(httpx.post(f"{url}/v1/restore", content=chunks, headers={"Content-Type": "multipart/form-data; boundary=x"}), 413)
    assert post(url, "sr2", png).status_code == 200  # still serving
    text = httpx.get(f"{url}/metrics").text
    assert metric(text, "pgdm_errors_total", endpoint="/v1/restore", status="413") == 4
    assert metric(text, "pgdm_errors_total", endpoint="/v1/restore", status="500") == 0


def test_request_timeout(degraded, start_server):
    server = start_server(steps=50, timeout_s=0.001)
    assert_one_line_error(post(server.url, "sr2", inputs(degraded["sr2"])[0]), 504)


@pytest.mark.parametrize("with_token", [False, True])
def test_bearer_token(with_token, degraded, start_server):
    token = "s3cret-token" if with_token else None
    server = start_server(token=token)
    image = inputs(degraded["sr2"])[0]
    assert httpx.get(f"{server.url}/healthz").status_code == 200 and httpx.get(f"{server.url}/readyz").status_code == 200
    assert post(server.url, "sr2", image, token=token).status_code == 200
    assert httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {token}"} if token else {}).status_code == 200
    if with_token:
        assert_one_line_error(post(server.url, "sr2", image), 401)
        assert_one_line_error(post(server.url, "sr2", image, token="s3cret-tokeX"), 401)
        r = httpx.get(f"{server.url}/metrics")
        assert_one_line_error(r, 401)
        assert r.headers["www-authenticate"] == "Bearer"


def test_queue_full_answers_429(degraded, start_server):
    """With room for one pending request, a second one while the first waits for company gets 429 + Retry-After."""
    server = start_server(max_queue=1, max_batch=4, max_wait_ms=3000)
    image = inputs(degraded["sr2"])[0]
    first: list = []
    waiter = threading.Thread(target=lambda: first.append(post(server.url, "sr2", image)))
    waiter.start()
    for _ in range(10_000):  # until the first request is pending (it then waits 3 s for others)
        if metric(httpx.get(f"{server.url}/metrics").text, "pgdm_queue_depth") == 1:
            break
    r = post(server.url, "sr2", image, seed=1)
    assert_one_line_error(r, 429)
    assert int(r.headers["retry-after"]) >= 1
    waiter.join()
    assert first[0].status_code == 200


def _png_claiming(path, width, height):
    """A small PNG whose IHDR claims width × height pixels (CRC fixed): refused from the header or not at all."""
    import struct
    import zlib

    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    path.write_bytes(bytes(data))
    return path


def test_advice_names_the_request_fields_and_they_work(degraded, start_server, tmp_path):
    """A colour image for the gray model and inpainting without a mask: the error names the HTTP field to send
    (not a command-line flag), and sending it works."""
    server = start_server()
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "red.png")
    r = post(server.url, "sr2", tmp_path / "red.png", fit="resize")
    assert_one_line_error(r, 400)
    assert "gray=true" in r.json()["error"] and "--" not in r.json()["error"]
    assert post(server.url, "sr2", tmp_path / "red.png", fit="resize", gray="true").status_code == 200
    image = inputs(degraded["inpaint-center"])[0]
    r = post(server.url, "inpaint-center", image)
    assert_one_line_error(r, 400)
    assert "file field 'mask'" in r.json()["error"] and "--mask" not in r.json()["error"]
    assert post(server.url, "inpaint-center", image, mask=degraded["inpaint-center"] / f"{image.stem}_mask.png").status_code == 200


def test_an_oversized_png_is_refused_from_its_header(start_server, tmp_path):
    import warnings

    from pgdm.io import read_image

    huge = _png_claiming(tmp_path / "huge.png", 10000, 10000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        with pytest.raises(ValueError, match=r"huge.png: 10000×10000 = 100000000 pixels is over the limit of 89478485"):
            read_image(huge, 1)
    r = post(start_server().url, "sr2", huge)
    assert_one_line_error(r, 413)
    assert "10000×10000" in r.json()["error"]
