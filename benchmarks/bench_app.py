"""How long one photo takes through ``ran app``, beside the same prediction called directly, in one run.

    .venv/bin/python benchmarks/bench_app.py [--model ran_resnet18] [--region-size 224] [--repeats 5]

Three ways, interleaved, alternating two portraits (astronaut, camera; one face each), median seconds
per photo:

* direct: ``AppPredictor.predict_file`` (decode + MTCNN + model), what the app runs inside, in a worker
  thread as gradio calls it;
* API: ``gradio_client`` -> ``/predict`` (upload, queue, the same prediction, JSON back);
* page: upload in headless Chromium until the page shows the result (also draws the region-attention
  picture and the boxed photo). Skipped without ``/usr/bin/chromium``.

Random weights (speed does not depend on them). The ratios API / direct and page / direct are the cost of
the web layer.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import timm
import torch

import ran
from ran.app import build_app
from ran.app.predictor import AppPredictor


def portraits() -> list[Path]:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    return [data / "astronaut.png", data / "camera.png"]


class Ways:
    """The three ways to predict one photo, ready to be timed in turn (interleaved, so that the load of a
    shared machine falls on all three alike)."""

    def __init__(self, folder: str, url: str, page) -> None:
        from gradio_client import Client

        self.folder, self.page = folder, page
        self.predictor = AppPredictor([folder], device="cpu")
        self.worker = ThreadPoolExecutor(1)  # gradio runs event functions in worker threads
        self.client = Client(url, verbose=False)

    def direct(self, photo: Path) -> None:
        self.worker.submit(
            self.predictor.predict_file, photo, photo.name, self.folder, "mtcnn", "model"
        ).result()

    def api(self, photo: Path) -> None:
        from gradio_client import handle_file

        self.client.predict(handle_file(str(photo)), api_name="/predict")

    def in_page(self, photo: Path) -> None:
        self.page.locator("#ran-photo input[type=file]").set_input_files(str(photo))
        self.page.locator("#ran-status").get_by_text(f"found in {photo.name}").wait_for(timeout=60_000)
        self.page.locator("#ran-picture img").wait_for(timeout=60_000)


def measure(ways: Ways, repeats: int) -> dict[str, list[float]]:
    names = ["direct", "api"] + (["in_page"] if ways.page is not None else [])
    photos = portraits()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats + 2):  # the first two (one per photo) warm up
        for name in names:
            start = time.perf_counter()
            getattr(ways, name)(photos[i % 2])
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    return times


def open_page(playwright, url: str):
    browser = playwright.chromium.launch(
        executable_path="/usr/bin/chromium", args=["--no-sandbox"], headless=True
    )
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    page.locator("#ran-status").get_by_text("ready").wait_for(timeout=60_000)
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ran_resnet18")
    parser.add_argument("--region-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model = timm.create_model(args.model, region_size=args.region_size)
        folder = str(ran.save_pretrained(model, Path(tmp) / "model"))
        app = build_app(folder, device="cpu")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        _, url, _ = app.launch(
            server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
        )
        try:
            if Path("/usr/bin/chromium").is_file():
                from playwright.sync_api import sync_playwright

                with sync_playwright() as playwright:
                    runs = measure(Ways(folder, url, open_page(playwright, url)), args.repeats)
            else:
                runs = measure(Ways(folder, url, None), args.repeats)
        finally:
            app.close()
    base = statistics.median(runs["direct"])
    print(f"{args.model} (region size {args.region_size}), {args.repeats} photos each, median s/photo:")
    for name, times in runs.items():
        median = statistics.median(times)
        print(f"  {name:<8} {median:6.3f} s   x{median / base:5.2f} of direct")


if __name__ == "__main__":
    main()
