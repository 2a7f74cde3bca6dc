"""Hub folder format, model cards, and loading one saved model through every path.

The Hub paths run offline against (a) the Hugging Face cache layout with HF_HUB_OFFLINE=1 and (b) a real
local Hub-API server (olah, offline mirror mode, serving git repos) on 127.0.0.1. HF_HUB_OFFLINE and
HF_ENDPOINT are read at import time, so those checks run in a subprocess with the environment set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from huggingface_hub import ModelCard

import ran
from ran.modelio.card import CITATION, NO_RESULTS_NOTE, card_results
from ran.modelio.hub import build_hub_folder, push_to_hub
from ran.modelio.loading import check_folder

ROOT = Path(__file__).resolve().parents[2]
ORG_NAME = "ran-test/tiny-ran"
# results counted on the whole FERPlus subsets (3,137 / 605 faces), as a published card needs
FERPLUS_RESULTS = {
    "test": {"accuracy": 2510 / 3137, "correct": 2510, "total": 3137},
    "occlusion": {"accuracy": 0.8, "correct": 484, "total": 605},
}
RESULTS = {
    "test": {"accuracy": 0.75, "correct": 3, "total": 4},
    "occlusion": {"accuracy": 0.5, "correct": 1, "total": 2},
    "pose30": {"accuracy": 1.0, "correct": 2, "total": 2},
}


def tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("ran", backbone="test_resnet", region_size=32).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """Two versions of one model (an older and the current one), saved with save_pretrained."""
    base = tmp_path_factory.mktemp("hub")
    return {
        "old": ran.save_pretrained(tiny_model(1), base / "old"),
        "current": ran.save_pretrained(tiny_model(2), base / "current", results=RESULTS, dataset="ferplus"),
    }


# --- folder format and card -----------------------------------------------------------------------
def test_config_is_timm_format_without_num_classes_in_model_args(saved):
    config = json.loads((saved["current"] / "config.json").read_text())
    backbone_dim = timm.create_model("test_resnet", num_classes=0).num_features
    assert config["architecture"] == "ran" and config["num_classes"] == 8
    assert config["num_features"] == 2 * backbone_dim  # [f_i ; F_m]
    assert "num_classes" not in config["model_args"]
    assert config["model_args"]["backbone"] == "test_resnet"
    assert config["model_args"]["attention"] == "softmax" and len(config["model_args"]["regions"]) == 6
    assert config["label_names"] == list(ran.labels.FERPLUS_CLASSES)
    assert config["pretrained_cfg"]["label_names"] == list(ran.labels.FERPLUS_CLASSES)
    assert sorted(p.name for p in saved["current"].iterdir()) == [
        "README.md",
        "config.json",
        "eval_results.json",
        "model.safetensors",
    ]


def test_card_has_one_model_index_result_per_subset(saved):
    card = ModelCard.load(saved["current"] / "README.md")
    assert card_results(card) == {name: entry["accuracy"] for name, entry in RESULTS.items()}
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}
    assert card.data.library_name == "timm" and card.data.pipeline_tag == "image-classification"
    text = card.text
    # the results counted 2 faces: the card must not claim the whole subset's 605
    assert "| Occlusion-FERPlus (2 of its 605 images) | 0.5000 | 1/2 |" in text
    assert CITATION.splitlines()[0] in text and "10.1109/TIP.2019.2956143" in text
    for needed in ("Intended use", "Limitations", "occlusion", "Kaggle", "MIT", "research-only"):
        assert needed in text
    # published numbers are references in the text, never model-index metadata
    assert "88.55" in text and "88.55" not in str(card.data.to_dict())


def test_card_without_results_says_so(saved):
    card = ModelCard.load(saved["old"] / "README.md")
    assert NO_RESULTS_NOTE in card.text
    assert not card.data.eval_results and "model-index" not in card.content.split("---")[1]


def test_bad_results_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"results\['test'\]\['accuracy'\].*87.5"):
        ran.save_pretrained(tiny_model(0), tmp_path / "m", results={"test": {"accuracy": 87.5}})
    assert not (tmp_path / "m").exists()


def test_push_to_hub_uploads_the_built_folder(saved, monkeypatch, tmp_path):
    calls: dict[str, dict] = {}

    def record(name):
        def fake(self, *args, **kwargs):
            calls[name] = kwargs
            if name == "upload_folder":  # keep a copy of exactly what would be uploaded
                shutil.copytree(kwargs["folder_path"], tmp_path / "uploaded")
                return "https://example.invalid/commit/abc"
            return None

        return fake

    from huggingface_hub import HfApi

    for name in ("create_repo", "create_branch", "upload_folder"):
        monkeypatch.setattr(HfApi, name, record(name))
    url = push_to_hub(
        tiny_model(2),
        ORG_NAME,
        results=RESULTS,
        private=True,
        revision="v1",
        commit_message="test upload",
        dataset="ferplus",
    )
    assert url == "https://example.invalid/commit/abc"
    assert calls["create_repo"]["private"] is True
    assert calls["create_branch"]["branch"] == "v1"
    assert calls["upload_folder"]["revision"] == "v1"
    assert calls["upload_folder"]["commit_message"] == "test upload"
    assert calls["upload_folder"]["repo_id"] == ORG_NAME
    uploaded = tmp_path / "uploaded"
    built = build_hub_folder(
        tiny_model(2), tmp_path / "built", results=RESULTS, dataset="ferplus", repo_id=ORG_NAME
    )
    for name in ("config.json", "README.md", "eval_results.json", "model.safetensors"):
        assert (uploaded / name).read_bytes() == (built / name).read_bytes(), name
    assert f'ran.from_pretrained("{ORG_NAME}")' in (uploaded / "README.md").read_text()
    with pytest.raises(ValueError, match="ORG/NAME"):
        push_to_hub(tiny_model(2), "no-slash")


# --- bad input ------------------------------------------------------------------------------------
def _copy(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved["current"], tmp_path / "copy"))


def test_folder_without_config(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"copy: no config\.json"):
        ran.from_pretrained(folder)


@pytest.mark.parametrize("architecture", ["ran_resnet7", ["ran"], {"ran": 1}, 5])
def test_unknown_architecture(saved, tmp_path, architecture):
    folder = _copy(saved, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = architecture
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=re.escape(f"unknown architecture {architecture!r}")):
        ran.from_pretrained(folder)


def test_shape_mismatch(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["num_classes"] = 7
    config.pop("label_names"), config["pretrained_cfg"].pop("label_names")  # 7 classes, no 8 names
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"do not fit.*fc\.weight"):
        ran.from_pretrained(folder)


def test_truncated_safetensors(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="model.safetensors: unreadable safetensors file, truncated"):
        check_folder(folder)
    with pytest.raises(ValueError, match="truncated"):
        ran.from_pretrained(folder)


@pytest.mark.parametrize(
    "stored, refused",
    [(torch.float16, False), (torch.bfloat16, False), (torch.float64, False), (torch.int32, True)]
    + [(torch.float8_e4m3fn, True), (torch.bool, True)],
)
def test_weights_stored_as_another_kind_are_refused(saved, tmp_path, stored, refused):
    """Float weights in another float width load as the same model; stored as integers, fp8 or booleans
    they would be cast silently into a model that answers nonsense."""
    from safetensors.torch import load_file, save_file

    folder = _copy(saved, tmp_path)
    weights = load_file(folder / "model.safetensors")
    weights["fc.weight"] = weights["fc.weight"].to(stored)
    save_file(weights, folder / "model.safetensors")
    if refused:
        with pytest.raises(
            ValueError, match=r"tensor 'fc\.weight' is stored as \w+; this model's is floating"
        ):
            ran.from_pretrained(folder)
        return
    model = ran.from_pretrained(folder)
    expected = load_file(saved["current"] / "model.safetensors")["fc.weight"].to(stored).float()
    assert torch.equal(model.state_dict()["fc.weight"], expected)


def test_not_a_folder_or_repo(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ran.from_pretrained(tmp_path / "missing" / "model")
    checkpoint = tmp_path / "ckpt.pth.tar"
    checkpoint.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="ran convert"):
        ran.from_pretrained(checkpoint)
    (tmp_path / "model.safetensors").write_bytes(b"x")  # a file of a folder: the folder is what to give
    with pytest.raises(
        NotADirectoryError, match=re.escape(f"a file of a model folder; pass the folder, {tmp_path}")
    ):
        ran.from_pretrained(tmp_path / "model.safetensors")


# --- `ran models` ---------------------------------------------------------------------------------
def test_models_command_lists_names_with_params(capsys):
    from ran.cli.models import main

    assert main(["ran_resnet*", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"ran_resnet18", "ran_resnet34", "ran_resnet50", "ran_resnet101"}
    # torchvision's ResNet-18 without its 1000-class fc, plus alpha (513), beta (1025), fc (1024*8 + 8)
    tv = sum(p.numel() for p in torchvision.models.resnet18().parameters()) - (512 * 1000 + 1000)
    assert rows["ran_resnet18"]["params"] == tv + 513 + 1025 + 8200
    assert rows["ran_resnet50"]["feature_dim"] == 2048 and rows["ran_resnet18"]["region_size"] == 224
    with pytest.raises(ValueError, match="no registered RAN model matches"):
        main(["vit*"])
    for classes in ("0", "10000000000"):  # as many as a model folder may have, no more
        with pytest.raises(SystemExit):
            main(["--num-classes", classes])
        assert "expected an integer in [1, 100000]" in capsys.readouterr().err


# --- every loading path, Hub paths offline ----------------------------------------------------------
LOAD_SCRIPT = r"""
import json, sys
import numpy as np, torch, timm
from PIL import Image
import ran
from transformers import AutoModelForImageClassification, pipeline

local, repo_id, out = sys.argv[1], sys.argv[2], sys.argv[3]
extra = json.loads(sys.argv[4])
image = Image.fromarray((np.random.RandomState(0).rand(48, 48, 3) * 255).astype("uint8"))
reference = ran.from_pretrained(local).eval()
pixels = timm.data.create_transform(**timm.data.resolve_data_config(model=reference))(image)[None]
results = {"logits": {}, "aligned": {}, "pipeline": {}, "errors": {}}

def realign(model):
    # transformers keeps the weights as zero-copy views into the safetensors file: not 64-byte aligned,
    # so oneDNN may sum in another order (1-ulp differences). Fresh copies are aligned like timm's.
    for tensor in list(model.parameters()) + list(model.buffers()):
        tensor.data = tensor.data.clone()

def record(name, model):
    with torch.no_grad():
        results["logits"][name] = model.eval()(pixels).tolist()

def record_pipeline(name, source, **kw):
    names = reference.pretrained_cfg["label_names"]
    scores = pipeline("image-classification", model=source, **kw)(image, top_k=len(names))
    results["pipeline"][name] = [next(s["score"] for s in scores if s["label"] == n) for n in names]

record("ran.from_pretrained(path)", reference)
record("timm local-dir", timm.create_model(f"local-dir:{local}", pretrained=True))
record("timm hf-hub", timm.create_model(f"hf-hub:{repo_id}", pretrained=True))
record("ran.from_pretrained(repo)", ran.from_pretrained(repo_id))
for name, source in (("path", local), ("repo", repo_id)):
    auto = AutoModelForImageClassification.from_pretrained(source).eval()
    with torch.no_grad():
        key = f"AutoModelForImageClassification({name})"
        results["logits"][key] = auto(pixel_values=pixels).logits.tolist()
        realign(auto)
        results["aligned"][key] = auto(pixel_values=pixels).logits.tolist()
    if name == "path" or extra.get("pipeline_repo", True):
        record_pipeline(f"pipeline({name})", source)

if extra.get("pinned"):  # an older revision, pinned by commit hash
    rev, old_local = extra["pinned"]
    results["pinned"] = {}
    with torch.no_grad():
        results["pinned"]["expected"] = ran.from_pretrained(old_local).eval()(pixels).tolist()
        results["pinned"]["ran"] = ran.from_pretrained(repo_id, revision=rev).eval()(pixels).tolist()
        pinned_timm = timm.create_model(f"hf-hub:{repo_id}@{rev}", pretrained=True)
        results["pinned"]["timm"] = pinned_timm.eval()(pixels).tolist()
        auto = AutoModelForImageClassification.from_pretrained(repo_id, revision=rev).eval()
        realign(auto)
        results["pinned"]["transformers"] = auto(pixel_values=pixels).logits.tolist()
for name, (repo, rev) in extra.get("errors", {}).items():
    try:
        ran.from_pretrained(repo, revision=rev)
        results["errors"][name] = None
    except Exception as err:
        results["errors"][name] = f"{type(err).__name__}: {err}"
json.dump(results, open(out, "w"))
"""


def run_load_script(tmp_path: Path, local: Path, repo_id: str, env: dict[str, str], extra: dict) -> dict:
    script = tmp_path / "load_all.py"
    script.write_text(LOAD_SCRIPT)
    out = tmp_path / "out.json"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_TELEMETRY": "1", **env}
    proc = subprocess.run(
        [sys.executable, str(script), str(local), repo_id, str(out), json.dumps(extra)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def assert_all_paths_agree(results: dict, pipelines: int = 2) -> None:
    logits = {name: torch.tensor(v) for name, v in results["logits"].items()}
    assert len(logits) == 6, sorted(logits)  # ran x2, timm x2, transformers x2
    reference = logits["ran.from_pretrained(path)"]
    assert reference.abs().max() > 0 and reference.std() > 1e-6
    for name, value in logits.items():
        if name.startswith("AutoModel"):  # same weights, unaligned memory: equal to rounding
            torch.testing.assert_close(value, reference, rtol=1e-6, atol=1e-7, msg=name)
            value = torch.tensor(results["aligned"][name])
        assert torch.equal(value, reference), f"{name} differs from ran.from_pretrained(path)"
    probabilities = reference.softmax(-1)[0]
    assert len(results["pipeline"]) == pipelines
    for name, scores in results["pipeline"].items():
        torch.testing.assert_close(torch.tensor(scores), probabilities, rtol=0, atol=1e-6, msg=name)


def write_cache(hf_home: Path, repo_id: str, folder: Path, revision: str) -> None:
    """The Hugging Face cache layout: refs/main holds the revision (no newline), snapshots/<rev>/files."""
    repo_dir = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    shutil.copytree(folder, repo_dir / "snapshots" / revision)


def test_all_loading_paths_give_identical_logits_from_hf_cache_offline(saved, tmp_path):
    revision = "0123456789abcdef0123456789abcdef01234567"
    write_cache(tmp_path / "hf", ORG_NAME, saved["current"], revision)
    errors = {
        "cache miss": ["ran-test/not-cached", None],
        "uncached revision": [ORG_NAME, "fedcba9876543210fedcba9876543210fedcba98"],
    }
    results = run_load_script(
        tmp_path,
        saved["current"],
        ORG_NAME,
        {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"},
        {"errors": errors, "pinned": [revision, str(saved["current"])]},
    )
    assert_all_paths_agree(results)
    pinned = {k: torch.tensor(v) for k, v in results["pinned"].items()}
    for name in ("ran", "timm", "transformers"):
        assert torch.equal(pinned[name], pinned["expected"]), name
    miss = results["errors"]["cache miss"]
    assert miss.startswith("FileNotFoundError") and "ran-test/not-cached@main" in miss
    assert "not in the Hugging Face cache" in miss and "HF_HUB_OFFLINE=1" in miss
    assert "fedcba98" in results["errors"]["uncached revision"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=ran tests", "-c", "user.email=tests@example.invalid", *args]
    return subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _commit_folder(repo: Path, folder: Path, message: str) -> str:
    for path in repo.iterdir():
        if path.name != ".git":
            path.unlink()
    for path in folder.iterdir():
        shutil.copy2(path, repo / path.name)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def olah_server(tmp_path, saved):
    """olah in offline mirror mode on a free 127.0.0.1 port, serving git repos of the saved folders.

    Repos: ORG_NAME (commit 1 = the old model, commit 2 = the current one) and one without config.json.
    """
    pytest.importorskip("olah", reason="olah (test extra) serves the local Hub API")
    if shutil.which("git") is None:
        pytest.skip("git is needed for olah's local mirrors")
    mirrors = tmp_path / "mirrors"
    org, name = ORG_NAME.split("/")
    repo = mirrors / "models" / org / name
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    old_revision = _commit_folder(repo, saved["old"], "old model")
    _commit_folder(repo, saved["current"], "current model")
    broken = mirrors / "models" / org / "no-config"
    broken.mkdir(parents=True)
    _git(broken, "init", "-q", "-b", "main")
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    shutil.copy2(saved["current"] / "model.safetensors", no_config)
    _commit_folder(broken, no_config, "weights only")

    port = _free_port()
    workdir = tmp_path / "olah"
    workdir.mkdir()
    (workdir / "config.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{workdir / "repos"}"\n'
        f'mirrors-path = ["{mirrors}"]\n[accessibility]\noffline = true\n'
    )
    log = (workdir / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "olah.server", "-c", "config.toml", "--log-path", str(workdir / "logs")],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                url = f"{endpoint}/api/models/{ORG_NAME}/revision/main"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"olah did not start: {(workdir / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield {"endpoint": endpoint, "old_revision": old_revision}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.mark.slow
def test_all_loading_paths_give_identical_logits_from_local_hub_server(saved, tmp_path, olah_server):
    """The five loading paths on one saved model, the Hub ones through a real Hub API on 127.0.0.1."""
    errors = {
        "no config": [f"{ORG_NAME.split('/')[0]}/no-config", None],
        "no such repo": ["ran-test/does-not-exist", None],
    }
    results = run_load_script(
        tmp_path,
        saved["current"],
        ORG_NAME,
        {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": olah_server["endpoint"]},
        # olah (offline mode) answers 401 "repo not found" instead of 404 for files a repo lacks; the
        # pipeline probes optional processor files and stops there, so it loads by path here and by
        # repo id in the cache-layout test.
        {
            "errors": errors,
            "pinned": [olah_server["old_revision"], str(saved["old"])],
            "pipeline_repo": False,
        },
    )
    assert_all_paths_agree(results, pipelines=1)
    pinned = {k: torch.tensor(v) for k, v in results["pinned"].items()}
    assert not torch.equal(pinned["expected"], torch.tensor(results["logits"]["timm hf-hub"]))
    for name in ("ran", "timm", "transformers"):
        assert torch.equal(pinned[name], pinned["expected"]), f"{name} did not load the pinned revision"
    # olah's 401 for a missing file reads as "no such repository" to huggingface_hub; the real Hub's
    # 404 EntryNotFound path is covered by test_hub_repo_without_config_is_named below.
    assert results["errors"]["no config"].startswith("FileNotFoundError: ran-test/no-config")
    assert results["errors"]["no such repo"].startswith("FileNotFoundError: ran-test/does-not-exist: no such")
    # the downloads went through the server into the standard cache layout
    cache = tmp_path / "hf" / "hub" / f"models--{ORG_NAME.replace('/', '--')}"
    assert (cache / "snapshots" / olah_server["old_revision"] / "model.safetensors").is_file()


def test_hub_repo_without_config_is_named(monkeypatch):
    """The Hub's 404 for a missing file (RemoteEntryNotFoundError) becomes an error naming the file."""
    import huggingface_hub
    from huggingface_hub.errors import RemoteEntryNotFoundError

    def missing(repo_id, filename, **kwargs):
        response = type("Response", (), {"headers": {}, "status_code": 404, "request": None})()
        raise RemoteEntryNotFoundError(f"404: {filename}", response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", missing)
    with pytest.raises(FileNotFoundError, match=r"weights-only@v2: the repository has no config\.json"):
        ran.from_pretrained("ran-test/weights-only", revision="v2")


# --- hub/<name>/ specs and MODEL_CARD.md -------------------------------------------------------------
def test_model_card_md_is_the_flagship_card_without_measured_numbers():
    from ran.modelio.hub import load_spec, render_spec_card

    spec_dir = ROOT / "hub" / "ran_resnet18.ferplus"
    spec = load_spec(spec_dir)
    assert spec["architecture"] == "ran_resnet18" and spec["dataset"] == "ferplus"
    assert json.loads((spec_dir / "results.json").read_text())["results"] == {}
    text = (ROOT / "MODEL_CARD.md").read_text()
    assert text == render_spec_card(spec_dir).content  # re-render with hub/publish.py --card
    card = ModelCard(text)
    assert not card.data.eval_results and NO_RESULTS_NOTE in text
    assert "| Paper (Wang et al. 2020), RAN-ResNet18 | FERPlus test | 88.55 % |" in text
    assert "published, not measured here" in text and spec["training_command"] in text


def test_publish_assembles_training_output_with_measured_results(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("ran_resnet18", region_size=32)
    trained = ran.save_pretrained(model, tmp_path / "run" / "best")
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps({**FERPLUS_RESULTS, "model": "run/best"}))
    sys.path.insert(0, str(ROOT / "hub"))
    try:
        from publish import main as publish
    finally:
        sys.path.pop(0)
    out = tmp_path / "repo"
    spec_dir = ROOT / "hub" / "ran_resnet18.ferplus"
    argv = [str(spec_dir), "--model", str(trained), "--results", str(results_file), "--out", str(out)]
    assert publish(argv) == 0
    card = ModelCard.load(out / "README.md")
    assert card_results(card) == {name: round(e["accuracy"], 6) for name, e in FERPLUS_RESULTS.items()}
    assert "ORG/ran_resnet18.ferplus" in card.text and NO_RESULTS_NOTE not in card.text
    assert "| Occlusion-FERPlus (605 images) | 0.8000 | 484/605 |" in card.text
    with pytest.raises(FileExistsError):
        publish([str(spec_dir), "--model", str(trained), "--out", str(out)])
    wrong = ran.save_pretrained(tiny_model(0), tmp_path / "other")
    with pytest.raises(ValueError, match="describes 'ran_resnet18'"):
        publish([str(spec_dir), "--model", str(wrong), "--out", str(tmp_path / "repo2")])


def test_channels_last_model_saves_and_reloads(tmp_path):
    model = tiny_model(3).to(memory_format=torch.channels_last)
    assert not model.backbone.conv1[0].weight.is_contiguous()  # really strided differently
    ran.save_pretrained(model, tmp_path / "cl")
    reloaded = ran.from_pretrained(tmp_path / "cl").eval()
    images = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), model(images), rtol=1e-5, atol=1e-6)


def test_a_model_built_directly_saves_as_the_one_timm_creates(tmp_path):
    """``RegionAttentionNet(...)`` is a plain nn.Module: it saved only when made by timm.create_model
    (AttributeError: no pretrained_cfg)."""
    torch.manual_seed(3)
    direct = ran.RegionAttentionNet("test_resnet", region_size=32, num_classes=7).eval()
    created = timm.create_model("ran", backbone="test_resnet", region_size=32, num_classes=7).eval()
    created.load_state_dict(direct.state_dict())
    folders = [
        ran.save_pretrained(m, tmp_path / name) for m, name in ((direct, "direct"), (created, "created"))
    ]
    configs = [json.loads((folder / "config.json").read_text()) for folder in folders]
    assert configs[0] == configs[1]
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ran.load_model(folders[0])(images), direct(images), rtol=0, atol=1e-6)


def _publish():
    sys.path.insert(0, str(ROOT / "hub"))
    try:
        from publish import main
    finally:
        sys.path.pop(0)
    return main


@pytest.mark.parametrize(
    "results, problem",
    [
        ({"test": {"accuracy": 0.99, "correct": 1, "total": 320}}, "is not correct / total = 1/320"),
        ({"test": {"accuracy": 0.5, "correct": "x", "total": 4}}, "expected counts"),
        ({"test": {"accuracy": 0.5, "correct": 2, "total": True}}, "expected counts"),
        ({"test": {"accuracy": 0.5, "correct": 1, "total": 2}}, "2 faces, but FERPlus's 'test' has 3,137"),
        ("missing.json", "missing.json: no such file"),
        (".", ": a folder; expected ran evaluate's results.json"),
    ],
)
def test_publish_refuses_results_that_are_not_of_the_published_data(tmp_path, results, problem):
    """A card listed 'FERPlus test (3,137 images) 0.9900, 1/320' for results of 320 synthetic faces with
    a hand-edited accuracy; a mistyped --results path published a card without results."""
    trained = ran.save_pretrained(timm.create_model("ran_resnet18", region_size=32), tmp_path / "best")
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    given = str(tmp_path / results) if isinstance(results, str) else str(results_file)
    spec_dir = str(ROOT / "hub" / "ran_resnet18.ferplus")
    argv = [spec_dir, "--model", str(trained), "--results", given, "--out", str(tmp_path / "repo")]
    with pytest.raises(ValueError, match=re.escape(problem)):
        _publish()(argv)
    assert not (tmp_path / "repo").exists()


def test_publish_refuses_a_model_trained_on_other_data_and_a_placeholder_repo_before_writing(tmp_path):
    model = timm.create_model("ran_resnet18", region_size=32)
    synthetic = ran.save_pretrained(model, tmp_path / "synthetic", dataset="synthetic")
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(FERPLUS_RESULTS))
    spec_dir = str(ROOT / "hub" / "ran_resnet18.ferplus")
    argv = [
        spec_dir,
        "--model",
        str(synthetic),
        "--results",
        str(results_file),
        "--out",
        str(tmp_path / "repo"),
    ]
    with pytest.raises(ValueError, match="trained on ran-synthetic .* publishes a FERPlus model"):
        _publish()(argv)
    ferplus = ran.save_pretrained(model, tmp_path / "ferplus", dataset="ferplus")
    argv[2] = str(ferplus)
    with pytest.raises(ValueError, match="set repo_id .* before pushing"):
        _publish()([*argv, "--push"])
    assert not (tmp_path / "repo").exists()


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="Linux /proc")
def test_weights_that_cannot_be_read_are_named(saved, tmp_path):
    """A read error (EIO) said only 'input/output error', naming no file."""
    from ran.faults import fault_message

    folder = _copy(saved, tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to("/proc/self/mem")
    with pytest.raises(OSError) as info:
        check_folder(folder)
    assert fault_message(info.value) == f"{folder / 'model.safetensors'}: input/output error"
