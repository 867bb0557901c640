"""`pgdm serve` as a real process: SIGTERM while requests are in flight answers all of them, then exits."""
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from serve_helpers import metric

PGDM = str(Path(sys.executable).parent / "pgdm")


def test_sigterm_drains_in_flight_requests(model_path, degraded):
    image = sorted(degraded["sr2"].iterdir())[0]
    proc = subprocess.Popen(
        [PGDM, "serve", "--model", str(model_path), "--port", "0", "--steps", "30", "--max-batch", "2", "--max-wait-ms", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # "pgdm serve: listening on http://127.0.0.1:PORT", or "" if it died
        assert "listening on" in line, proc.stderr.read()
        url = line.split()[-1]
        answers = []

        def client(seed):
            try:
                answers.append(httpx.post(f"{url}/v1/restore", data={"task": "sr2", "seed": str(seed)}, files={"image": image.read_bytes()}, timeout=1800))
            except httpx.HTTPError as err:  # reported by the assertions below, not lost with the thread
                answers.append(err)

        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(6)]
        for t in threads:
            t.start()
        in_flight = 0
        for _ in range(3000):  # until all six are in the server (restoring or queued), or every client has its answer
            in_flight = metric(httpx.get(f"{url}/metrics").text, "pgdm_requests_in_flight")
            if in_flight == 6 or not any(t.is_alive() for t in threads):
                break
        assert in_flight == 6, [getattr(a, "status_code", a) for a in answers]
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join()
        # uvicorn re-raises the signal once it has drained (the process then ends by SIGTERM, as the caller asked)
        assert proc.wait(timeout=1800) in (0, -signal.SIGTERM)
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(r.status_code for r in answers) == [200] * 6
    assert all(r.headers["content-type"] == "image/png" for r in answers)
    assert len({r.content for r in answers}) == 6
