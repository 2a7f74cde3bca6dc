"""Can one visitor of ``ran app`` hold the others? One address sends several crowded photos at once;
once they are being served, a second address sends one portrait; how long until its answer?

    .venv/bin/python benchmarks/bench_app_fairness.py [--crowded 4] [--faces 1024] [--repeats 2]

Run side by side in one process, on two apps with the same model (``ran_resnet18``, random weights) and
bounds: ``per_visitor`` at its default (``AppLimits``), and ``per_visitor`` equal to ``concurrency``
(no bound per address: how the app served before ``--per-visitor``). Requests go over plain HTTP as the
page sends them (queue/join, then the queue's event stream), from 127.0.0.1 (the crowd) and 127.0.0.2
(the second visitor). The table gives the second visitor's seconds (median over the repeats), and the
seconds the same portrait takes alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import timm
import torch
from PIL import Image

import ran
from ran.app import build_app
from ran.app.limits import AppLimits

CROWD, VISITOR = "127.0.0.1", "127.0.0.2"


def crowd_photo(faces: int, out: Path) -> Path:
    """A photo of ``faces`` tiles of the astronaut's face (64 px, on gray): detection takes seconds."""
    import skimage

    face = Image.open(Path(skimage.__file__).parent / "data" / "astronaut.png").convert("RGB")
    face = face.crop((150, 30, 300, 200)).resize((64, 64))
    columns = int(faces**0.5 + 0.999)
    canvas = Image.new("RGB", (columns * 80, -(-faces // columns) * 80), (128, 128, 128))
    for i in range(faces):
        canvas.paste(face, ((i % columns) * 80, (i // columns) * 80))
    canvas.save(out)
    return out


class Server:
    """One app served on 127.0.0.1; photos uploaded and ``/predict`` called from a chosen address."""

    def __init__(self, folder: str, limits: AppLimits) -> None:
        self.app = build_app(folder, device="cpu", limits=limits)
        _, url, _ = self.app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
        self.api = url.rstrip("/") + "/gradio_api"
        [self.index] = [i for i, fn in self.app.fns.items() if fn.fn.__name__ == "api_predict"]

    def upload(self, photo: Path) -> dict:
        with photo.open("rb") as file:
            [path] = httpx.post(f"{self.api}/upload", files={"files": file}).json()
        return {"path": path, "orig_name": photo.name, "meta": {"_type": "gradio.FileData"}}

    def predict(self, upload: dict, address: str, started: threading.Event | None = None) -> str:
        """The reply's first value as text, from ``address``; ``started`` is set once the request is
        being served (the queue said so)."""
        session = uuid.uuid4().hex
        transport = httpx.HTTPTransport(local_address=address)
        with httpx.Client(base_url=self.api, timeout=600, transport=transport) as http:
            body = {"data": [upload], "fn_index": self.index, "session_hash": session, "event_data": None}
            http.post("/queue/join", json=body).raise_for_status()
            with http.stream("GET", "/queue/data", params={"session_hash": session}) as stream:
                for line in stream.iter_lines():
                    message = json.loads(line[5:]) if line.startswith("data:") else {}
                    if message.get("msg") == "process_starts" and started is not None:
                        started.set()
                    if message.get("msg") == "process_completed":
                        return json.dumps(message["output"])
        raise RuntimeError("no reply")


def second_visitor_wait(server: Server, crowd: dict, portrait: dict, crowded: int) -> float:
    """Seconds the second address waits for its portrait while ``crowded`` photos of one address run."""
    started = [threading.Event() for _ in range(crowded)]
    threads = [
        threading.Thread(target=server.predict, args=(crowd, CROWD, event), daemon=True) for event in started
    ]
    for thread in threads:
        thread.start()
    started[0].wait(600)
    time.sleep(0.5)  # the others reach the queue (and are served or refused)
    begin = time.perf_counter()
    reply = server.predict(portrait, VISITOR)
    waited = time.perf_counter() - begin
    assert '"box"' in reply, reply
    for thread in threads:
        thread.join(600)
    return waited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ran_resnet18")
    parser.add_argument("--crowded", type=int, default=4, help="crowded photos sent at once by one address")
    parser.add_argument("--faces", type=int, default=1024, help="faces in each crowded photo")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    limits = AppLimits()
    settings = {
        f"per_visitor {limits.per_visitor} (default)": limits,
        f"per_visitor {limits.concurrency} (= concurrency: none)": AppLimits(per_visitor=limits.concurrency),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(ran.save_pretrained(timm.create_model(args.model), Path(tmp) / "model"))
        crowd = crowd_photo(args.faces, Path(tmp) / "crowd.png")
        servers = {name: Server(folder, value) for name, value in settings.items()}
        portrait = Path(__import__("skimage").__file__).parent / "data" / "astronaut.png"
        uploads = {name: (s.upload(crowd), s.upload(portrait)) for name, s in servers.items()}
        alone, waits = [], {name: [] for name in servers}
        for _ in range(args.repeats):
            for name, server in servers.items():
                start = time.perf_counter()
                server.predict(uploads[name][1], VISITOR)
                alone.append(time.perf_counter() - start)
                waits[name].append(second_visitor_wait(server, *uploads[name], args.crowded))
        for server in servers.values():
            server.app.close()
    print(
        f"{args.model}, {args.crowded} photos of {args.faces} faces from one address, then a portrait "
        f"from another; concurrency {limits.concurrency}; median of {args.repeats}"
    )
    print(f"  portrait alone: {statistics.median(alone):.1f} s")
    for name, values in waits.items():
        print(f"  {name}: second visitor answered in {statistics.median(values):.1f} s")


if __name__ == "__main__":
    main()
