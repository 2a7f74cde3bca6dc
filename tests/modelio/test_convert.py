"""`ran convert`: original RAN checkpoints -> our safetensors folder, checked against a reference.

The checkpoints are written here in the original layout (RAN.md: torchvision ResNet keys under
``module.``, ``alpha.0`` Linear(C, 1), ``beta.0`` Linear(2C, 1), ``fc`` Linear(2C, 8), saved as
{'epoch', 'arch', 'state_dict', 'best_prec1', 'optimizer'}). The reference model is built from the raw
source state dict (torchvision ResNet + plain Linear layers), not through the converter.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
from reference import reference_logits, reference_regions
from torch import nn

import ran
from ran.cli.convert import main
from ran.modelio.convert import convert
from ran.regions import REGION_PRESETS

REGION_SIZE = 32
# The reference comparison upsamples 48 px faces (as the original did to 224 px): roi_align and the
# reference's point sampling agree when upsampling; when downsampling roi_align averages several samples.
REFERENCE_REGION_SIZE = 64


def _randomise_batchnorm(module: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BN statistics so that a wrong mapping of any BN tensor changes the logits."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
            m.running_var.copy_(0.5 + torch.rand(c, generator=generator))
            m.weight.data.copy_(1 + 0.1 * torch.randn(c, generator=generator))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=generator))


def original_checkpoint(depth: int = 18, num_classes: int = 8, seed: int = 0) -> dict:
    """A checkpoint in the authors' layout with random weights (what torch.save wrote in their code)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    resnet = getattr(torchvision.models, f"resnet{depth}")()
    _randomise_batchnorm(resnet, generator)
    feature_dim = resnet.fc.in_features
    alpha, beta = nn.Linear(feature_dim, 1), nn.Linear(2 * feature_dim, 1)
    fc = nn.Linear(2 * feature_dim, num_classes)
    state = OrderedDict()
    for key, value in resnet.state_dict().items():
        if not key.startswith("fc."):  # the original network has no ImageNet head
            state[f"module.{key}"] = value
    for name, layer in (("alpha.0", alpha), ("beta.0", beta), ("fc", fc)):
        for param, value in layer.state_dict().items():
            state[f"module.{name}.{param}"] = value
    optimizer = torch.optim.SGD(list(alpha.parameters()) + list(fc.parameters()), lr=0.1, momentum=0.9)
    return {
        "epoch": 60,
        "arch": f"resnet{depth}",
        "state_dict": state,
        "best_prec1": torch.tensor(88.5),
        "optimizer": optimizer.state_dict(),
    }


def reference_from_source(state: dict[str, torch.Tensor], depth: int, num_classes: int) -> SimpleNamespace:
    """The source network rebuilt from its raw keys: torchvision ResNet (pooled features) + Linears."""
    plain = {k.removeprefix("module."): v for k, v in state.items()}
    resnet = getattr(torchvision.models, f"resnet{depth}")()
    resnet.fc = nn.Identity()
    resnet.load_state_dict({k: v for k, v in plain.items() if not k.startswith(("alpha.", "beta.", "fc."))})
    feature_dim = plain["alpha.0.weight"].shape[1]
    layers = {
        "alpha.0": nn.Linear(feature_dim, 1),
        "beta.0": nn.Linear(2 * feature_dim, 1),
        "fc": nn.Linear(2 * feature_dim, num_classes),
    }
    for name, layer in layers.items():
        layer.load_state_dict({"weight": plain[f"{name}.weight"], "bias": plain[f"{name}.bias"]})
    return SimpleNamespace(
        backbone=resnet.eval(),
        self_attention=layers["alpha.0"],
        relation_attention=layers["beta.0"],
        fc=layers["fc"],
    )


@pytest.mark.parametrize("depth", [18, pytest.param(50, marks=pytest.mark.slow)])
def test_original_checkpoint_converts_to_same_logits(tmp_path, depth, capsys):
    checkpoint = original_checkpoint(depth)
    src = tmp_path / f"ran_resnet{depth}_ferplus.pth.tar"
    torch.save(checkpoint, src)
    dst = tmp_path / "converted"
    assert main([str(src), str(dst), "--region-size", str(REFERENCE_REGION_SIZE)]) == 0
    printed = capsys.readouterr().out
    assert f"ran_resnet{depth}" in printed and "missing keys (0)" in printed

    config = json.loads((dst / "config.json").read_text())
    assert config["architecture"] == f"ran_resnet{depth}"
    assert config["model_args"]["attention"] == "softmax"  # the original code's attention
    assert "num_classes" not in config["model_args"]
    model = ran.from_pretrained(dst).eval()

    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    boxes = REGION_PRESETS["ferplus6"]
    reference = reference_from_source(checkpoint["state_dict"], depth, 8)
    with torch.no_grad():
        expected, expected_alpha = reference_logits(
            reference, reference_regions(images, boxes, (REFERENCE_REGION_SIZE,) * 2), "softmax"
        )
        out = model.forward_with_attention(images)
    assert expected.abs().max() > 1e-3  # the comparison is not between two zero vectors
    torch.testing.assert_close(out.logits, expected, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(out.alpha, expected_alpha, atol=1e-5, rtol=1e-4)


def test_reimplementation_iresnet_layout(tmp_path):
    """IResNet keys (arcface names, with the fc + features embedding) land in backbone.* untouched."""
    source = ran.RegionAttentionNet("iresnet18", region_size=REGION_SIZE).eval()
    state = {}
    for key, value in source.state_dict().items():
        if key.startswith("backbone."):
            state[f"module.{key.removeprefix('backbone.')}"] = value
    state.update({f"module.alpha.0.{p}": v for p, v in source.self_attention.state_dict().items()})
    state.update({f"module.beta.0.{p}": v for p, v in source.relation_attention.state_dict().items()})
    state.update({f"module.pred_fc2.{p}": v for p, v in source.fc.state_dict().items()})
    assert state["module.fc.weight"].shape == (512, 512 * 49)  # the arcface embedding keeps its name
    src = tmp_path / "iresnet.pth.tar"
    torch.save({"state_dict": state, "epoch": 1}, src)
    report = convert(src, tmp_path / "out", region_size=REGION_SIZE)
    assert report.architecture == "ran_iresnet18" and report.missing_keys == []
    model = ran.from_pretrained(tmp_path / "out").eval()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_unexpected_keys_are_reported(tmp_path):
    checkpoint = original_checkpoint(18)
    checkpoint["state_dict"]["module.pred_fc1.weight"] = torch.zeros(7, 512)
    src = tmp_path / "extra.pth.tar"
    torch.save(checkpoint, src)
    report = convert(src, tmp_path / "out", region_size=REGION_SIZE)
    assert report.unexpected_keys == ["pred_fc1.weight"]
    assert report.missing_keys == []


def test_missing_weights_are_an_error_naming_them(tmp_path):
    checkpoint = original_checkpoint(18)
    del checkpoint["state_dict"]["module.layer4.1.conv2.weight"]
    src = tmp_path / "partial.pth.tar"
    torch.save(checkpoint, src)
    with pytest.raises(ValueError, match=r"backbone\.layer4\.1\.conv2\.weight"):
        convert(src, tmp_path / "out", region_size=REGION_SIZE)
    assert not (tmp_path / "out").exists()
    report = convert(src, tmp_path / "out", region_size=REGION_SIZE, allow_missing=True)
    assert report.missing_keys == ["backbone.layer4.1.conv2.weight"]


def test_shape_mismatch_names_the_tensor(tmp_path):
    checkpoint = original_checkpoint(18)
    checkpoint["state_dict"]["module.layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    src = tmp_path / "bad_shape.pth.tar"
    torch.save(checkpoint, src)
    with pytest.raises(ValueError, match=r"shape mismatch.*layer2\.0\.conv1\.weight.*\(128, 64, 5, 5\)"):
        convert(src, tmp_path / "out")


def test_attention_head_shape_mismatch(tmp_path):
    checkpoint = original_checkpoint(18)
    checkpoint["state_dict"]["module.beta.0.weight"] = torch.zeros(1, 512)
    src = tmp_path / "bad_beta.pth.tar"
    torch.save(checkpoint, src)
    with pytest.raises(ValueError, match=r"beta\.0\.weight is \(1, 512\), expected \(1, 1024\)"):
        convert(src, tmp_path / "out")


def test_unknown_layout_is_refused(tmp_path):
    src = tmp_path / "backbone_only.pth.tar"
    torch.save({"state_dict": torchvision.models.resnet18().state_dict()}, src)
    with pytest.raises(ValueError, match="unknown checkpoint layout"):
        convert(src, tmp_path / "out")


def test_a_classifier_of_millions_of_classes_is_refused_before_the_model_is_built(tmp_path):
    """A 4-million-row classifier saved as a stride-0 view is a small file; building its model took 17 GB."""
    state = original_checkpoint(18)["state_dict"]
    state["module.fc.weight"] = torch.zeros(1).expand(2**22, 1024)
    state["module.fc.bias"] = torch.zeros(1).expand(2**22)
    src = tmp_path / "many_classes.pth.tar"
    torch.save({"state_dict": state}, src)
    assert src.stat().st_size < 100 * 2**20
    with pytest.raises(ValueError, match=r"fc.weight has 4194304 rows \(classes\); expected 1 to 100000"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_depth_and_arch(tmp_path, capsys):
    checkpoint = original_checkpoint(18)
    state = checkpoint["state_dict"]
    for key in [k for k in state if k.startswith("module.layer3.1.")]:
        del state[key]
    src = tmp_path / "odd_depth.pth.tar"
    torch.save(checkpoint, src)
    with pytest.raises(ValueError, match=r"unknown resnet depth: blocks per stage \(2, 2, 1, 2\)"):
        convert(src, tmp_path / "out")
    # an unknown --arch is an argparse error (exit 2) naming the choices
    with pytest.raises(SystemExit) as exit_info:
        main([str(src), str(tmp_path / "out"), "--arch", "ran_resnet7"])
    assert exit_info.value.code == 2 and "ran_resnet18" in capsys.readouterr().err


def test_pickled_code_is_refused(tmp_path):
    src = tmp_path / "pickled_model.pth.tar"
    torch.save({"model": torchvision.models.resnet18()}, src)  # a whole nn.Module: needs its code
    with pytest.raises(ValueError, match="refused to load") as info:
        convert(src, tmp_path / "out")
    message = str(info.value)
    assert (
        "weights_only" not in message and "trusted source" not in message
    )  # never advise turning safety off
    assert "torchvision.models.resnet.ResNet" in message and len(message.splitlines()) == 1


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_plain_pickle_is_refused_in_one_line_without_running_it(tmp_path, capsys):
    """A pickle that torch.save did not write (Python's own pickle, protocol 4) made torch print a two-line
    warning about its protocol before the refusal."""
    from ran.cli import run_main

    src, marker = tmp_path / "weights.pth", tmp_path / "ran-the-payload"
    src.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}, protocol=4))
    assert run_main(main, [str(src), str(tmp_path / "out")], prog="ran convert") == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"ran convert: error: {src}: refused to load: the file needs pickled"), line
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", [b"hello", b"root:x:0:0:root:/root:/bin/bash\n" * 3])
def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, text):
    """Text or noise named .pth: torch's legacy reader fails in many ways (IndexError, KeyError...)."""
    src = tmp_path / "weights.pth"
    src.write_bytes(text)
    with pytest.raises(ValueError, match=f"{re.escape(str(src))}: not a readable PyTorch checkpoint") as info:
        convert(src, tmp_path / "out")
    assert len(str(info.value).splitlines()) == 1 and not (tmp_path / "out").exists()


def test_existing_destination_is_kept(tmp_path):
    src = tmp_path / "ckpt.pth.tar"
    torch.save(original_checkpoint(18), src)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    from ran.cli import run_main

    assert run_main(main, [str(src), str(dst)], prog="ran convert") == 2
    assert (dst / "keep.txt").read_text() == "mine"
