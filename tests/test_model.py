import pytest
import timm
import torch
from reference import reference_logits, reference_regions

import ran
from ran import RANCriterion, RegionAttentionNet, RegionBiasedLoss
from ran.labels import FERPLUS_CLASSES
from ran.models.ran import CPU_CHUNK_PIXELS
from ran.regions import REGION_PRESETS, crop_regions, jitter_boxes, landmark_regions, random_crop_boxes

SMALL = {"backbone": "test_resnet", "region_size": 32}


def small_model(**kw) -> RegionAttentionNet:
    torch.manual_seed(0)
    model = RegionAttentionNet(**{**SMALL, **kw}).double().eval()
    # non-trivial head weights so attention varies across regions
    for lin in (model.self_attention, model.relation_attention):
        torch.nn.init.normal_(lin.weight, std=0.5)
    return model


@pytest.mark.parametrize("attention", ["softmax", "sigmoid"])
def test_forward_regions_matches_per_region_reference(attention):
    model = small_model(attention=attention, region_size=64)  # 48 px faces upsampled, as in the original
    images = torch.rand(3, 3, 48, 48, dtype=torch.float64)
    regions = reference_regions(images, model.boxes, (64, 64))
    out = model.forward_regions(regions)
    ref_logits, ref_alpha = reference_logits(model, regions, attention)
    torch.testing.assert_close(out.logits, ref_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.alpha, ref_alpha, rtol=0, atol=1e-5)
    # model(images) cuts its own regions: the same crops, the same logits
    torch.testing.assert_close(model(images), ref_logits, rtol=0, atol=1e-5)
    assert not torch.allclose(out.alpha, out.alpha[:, :1].expand_as(out.alpha)), (
        "attention should differ by region"
    )


def test_softmax_and_sigmoid_modes_differ_and_normalise():
    images = torch.rand(2, 3, 48, 48, dtype=torch.float64)
    soft = small_model(attention="softmax").forward_with_attention(images)
    sig = small_model(attention="sigmoid").forward_with_attention(images)
    torch.testing.assert_close(soft.alpha.sum(1), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(soft.beta.sum(1), torch.ones(2, dtype=torch.float64))
    assert ((sig.alpha > 0) & (sig.alpha < 1)).all()
    assert not torch.allclose(soft.logits, sig.logits)
    torch.testing.assert_close(soft.weights.sum(1), torch.ones(2, dtype=torch.float64))


def test_crop_matches_reference_for_any_input_size():
    images = torch.rand(2, 3, 37, 53, dtype=torch.float64)
    boxes = REGION_PRESETS["affectnet8"]
    crops = crop_regions(images, torch.tensor(boxes, dtype=torch.float64), (64, 64))
    torch.testing.assert_close(crops, reference_regions(images, boxes, (64, 64)), rtol=0, atol=1e-10)
    whole = crop_regions(images, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), (37, 53))
    torch.testing.assert_close(whole[:, 0], images)  # identity resampling


def test_region_permutation_changes_nothing_but_order():
    model = small_model()
    images = torch.rand(2, 3, 48, 48, dtype=torch.float64)
    perm = [3, 1, 0, 5, 2, 4]
    permuted = small_model(regions=[model.boxes[i] for i in perm])
    permuted.load_state_dict(model.state_dict())
    a, b = model.forward_with_attention(images), permuted.forward_with_attention(images)
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.alpha[:, perm], b.alpha)


def test_training_runs_the_backbone_once_on_all_regions():
    """BatchNorm's batch statistics must see every crop of the batch: one call, even with a chunk set."""
    model = small_model().train()
    model.backbone_chunk = 5
    calls = []
    model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    model(torch.rand(4, 3, 48, 48, dtype=torch.float64))
    assert calls == [torch.Size([4 * 6, 3, 32, 32])]


@pytest.mark.parametrize("chunk", [5, 48, 0, None])
def test_inference_in_backbone_chunks_gives_the_same_logits(chunk):
    """Chunked backbone calls (CPU inference) change nothing but the number of calls; the automatic size
    on CPU is ``CPU_CHUNK_PIXELS`` crop pixels per call."""
    model = small_model(region_size=112)
    images = torch.rand(8, 3, 48, 48, dtype=torch.float64)
    model.backbone_chunk = 0
    expected = model.forward_with_attention(images)
    model.backbone_chunk = chunk
    sizes = []
    model.backbone.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    got = model.forward_with_attention(images)
    per_call = {5: 5, 48: 48, 0: 48, None: max(1, CPU_CHUNK_PIXELS // 112**2)}[chunk]
    assert sizes == [min(per_call, 48 - start) for start in range(0, 48, per_call)]
    torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=1e-12)
    torch.testing.assert_close(got.alpha, expected.alpha, rtol=0, atol=1e-12)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("face", [24, 48])  # matrix-product cut (upsampling) and RoIAlign (downsampling)
def test_crop_layouts_and_autocast_keep_the_fp32_crops(face, per_image):
    images = torch.rand(3, 3, face, face)
    boxes = torch.tensor(REGION_PRESETS["ferplus6"])
    if per_image:
        boxes = jitter_boxes(boxes, 3, scale=0.1, translate=0.05, generator=torch.Generator().manual_seed(3))
    expected = crop_regions(images, boxes, (32, 32))
    channels_last = crop_regions(images, boxes, (32, 32), channels_last=True)
    assert channels_last.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(channels_last, expected, rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = crop_regions(images, boxes, (32, 32))
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, expected, rtol=0, atol=0)
    if per_image and face == 24:  # one bilinear sample per output pixel: the grid_sample reference
        reference = [reference_regions(images[i : i + 1], boxes[i].tolist(), (32, 32))[0] for i in range(3)]
        torch.testing.assert_close(expected, torch.stack(reference), rtol=0, atol=1e-5)


def test_channels_last_crops_give_the_same_logits():
    model = small_model()
    images = torch.rand(2, 3, 48, 48, dtype=torch.float64)
    model.channels_last_crops = False
    expected = model(images)
    model.channels_last_crops = True
    torch.testing.assert_close(model(images), expected, rtol=0, atol=1e-12)


def test_per_image_boxes_landmarks_jitter_random():
    model = small_model()
    images = torch.rand(2, 3, 48, 48, dtype=torch.float64)
    shared = model.region_boxes.double()
    per_image = shared.expand(2, -1, -1)
    torch.testing.assert_close(model(images, per_image), model(images))
    jit = jitter_boxes(shared, 2, generator=torch.Generator().manual_seed(0))
    assert jit.shape == (2, 6, 4) and (jit >= 0).all() and (jit <= 1).all()
    size = jit[..., 2:] - jit[..., :2]
    base = shared[:, 2:] - shared[:, :2]
    assert ((size / base - 1).abs() <= 0.02 + 1e-9).all()
    rnd = random_crop_boxes(2, 6, generator=torch.Generator().manual_seed(0))
    assert rnd.shape == (2, 6, 4) and (rnd[:, 1:, 2:] > rnd[:, 1:, :2]).all()
    lm = torch.tensor([[[15.0, 18], [33, 18], [24, 27], [17, 36], [31, 36]]]).expand(2, -1, -1)
    boxes = landmark_regions(lm, (48, 48))
    torch.testing.assert_close(boxes[0, 0], torch.tensor([0.0, 0, 1, 1]))
    centres = (boxes[0, 1:, :2] + boxes[0, 1:, 2:]) / 2
    torch.testing.assert_close(centres[3], torch.tensor([24 / 48, 36 / 48]))  # mouth centre
    lm_model = small_model(regions=boxes[0].tolist())
    assert lm_model(images, boxes.double()).shape == (2, 8)


def test_registered_models_and_configs():
    names = timm.list_models("ran*")
    for expected in [
        "ran",
        "ran_resnet18",
        "ran_resnet34",
        "ran_resnet50",
        "ran_resnet101",
        "ran_iresnet18",
        "ran_iresnet34",
        "ran_iresnet50",
        "ran_iresnet100",
        "ran_vgg16",
    ]:
        assert expected in names
    assert {"iresnet18", "iresnet34", "iresnet50", "iresnet100"} <= set(timm.list_models("iresnet*"))
    model = timm.create_model("ran_resnet18")
    cfg = model.pretrained_cfg
    assert cfg["num_classes"] == 8 and tuple(cfg["label_names"]) == FERPLUS_CLASSES
    assert cfg["mean"] == (0.0, 0.0, 0.0) and cfg["std"] == (1.0, 1.0, 1.0)
    assert model.num_regions == 6 and model.region_feature_dim == 512 and model.fc.in_features == 1024
    assert timm.create_model("ran_resnet50").fc.in_features == 4096  # Bottleneck: C = 2048
    assert timm.create_model("ran_iresnet18").region_size == [112, 112]
    generic = timm.create_model("ran", backbone="convnext_atto", regions="affectnet8", region_size=32)
    assert generic.num_regions == 8 and generic(torch.rand(1, 3, 40, 40)).shape == (1, 8)


def test_ran_iresnet_loads_arcface_parameter_names():
    backbone = timm.create_model("iresnet18")
    keys = set(backbone.state_dict())
    for key in [
        "conv1.weight",
        "bn1.running_mean",
        "prelu.weight",
        "layer1.0.bn1.weight",
        "layer1.0.conv1.weight",
        "layer1.0.bn2.weight",
        "layer1.0.prelu.weight",
        "layer1.0.conv2.weight",
        "layer1.0.bn3.weight",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.weight",
        "bn2.weight",
        "fc.weight",
        "features.weight",
    ]:
        assert key in keys
    assert backbone.fc.in_features == 512 * 7 * 7
    assert backbone(torch.rand(2, 3, 112, 112)).shape == (2, 512)


def test_backbone_file_reports_missing_and_unexpected(tmp_path, caplog):
    torch.manual_seed(1)
    src = RegionAttentionNet(**SMALL).backbone.state_dict()
    skipped = sorted(k for k in src if k.startswith("conv1."))
    assert skipped
    state = {f"module.{k}": v for k, v in src.items() if k not in skipped}
    state["module.extra.weight"] = torch.zeros(1)
    path = tmp_path / "backbone.pth.tar"
    torch.save({"state_dict": state, "epoch": 3}, path)
    torch.manual_seed(2)
    model = RegionAttentionNet(**SMALL, backbone_file=path)
    report = model.backbone_load_report
    assert report["unexpected_keys"] == ["extra.weight"]
    assert sorted(report["missing_keys"]) == [k for k in skipped if "num_batches_tracked" not in k]
    assert "missing" in caplog.text
    loaded = model.backbone.state_dict()
    for key, value in src.items():
        if key not in skipped and value.is_floating_point():
            torch.testing.assert_close(loaded[key], value)
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.0.weight": torch.zeros(1, 2, 3)}, bad)
    with pytest.raises(ValueError, match="shapes do not fit"):
        RegionAttentionNet(**SMALL, backbone_file=bad)


def test_freeze_backbone_up_to_stage():
    model = timm.create_model("ran_resnet18", region_size=32)
    frozen = model.freeze_backbone("layer2")
    assert frozen == ["bn1", "conv1", "layer1", "layer2"]
    trainable = {
        n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone")
    }
    assert trainable == {"layer3", "layer4"}
    assert model.self_attention.weight.requires_grad and model.fc.weight.requires_grad
    assert type(model.backbone.bn1).__name__ == "FrozenBatchNorm2d"
    model.freeze_backbone("all")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    with pytest.raises(ValueError, match="no stage named 'layer9'"):
        timm.create_model("ran_resnet18").freeze_backbone("layer9")


def test_region_biased_loss_hand_computed():
    alpha = torch.tensor([[0.30, 0.20, 0.35, 0.15], [0.10, 0.50, 0.20, 0.20], [0.4, 0.2, 0.2, 0.2]])
    # gaps: 0.35-0.30=0.05 -> 0.1-0.05=0.05; 0.5-0.1=0.4 -> 0; 0.2-0.4=-0.2 -> 0.3
    torch.testing.assert_close(RegionBiasedLoss(0.1)(alpha), torch.tensor((0.05 + 0.0 + 0.3) / 3))
    # the whole face (index 0) is never part of the max: only crops compete with it
    alpha = torch.tensor([[0.9, 0.05, 0.05]])
    torch.testing.assert_close(RegionBiasedLoss(0.1)(alpha), torch.tensor(0.1 + 0.85))
    # the LAST crop counts (the reimplementation's off-by-one skipped it)
    alpha = torch.tensor([[0.2, 0.1, 0.1, 0.1, 0.1, 0.4]])
    torch.testing.assert_close(RegionBiasedLoss(0.02)(alpha), torch.tensor(0.0))
    with pytest.raises(ValueError, match="alpha"):
        RegionBiasedLoss()(torch.rand(4))


def test_criterion_hard_and_soft_targets():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    alpha = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3]])
    out = ran.RANOutput(logits=logits, alpha=alpha, beta=alpha, region_features=torch.zeros(2, 3, 1))
    hard = RANCriterion(margin=0.1, rb_weight=1.0)(out, torch.tensor([0, 2]))
    log_p = logits.log_softmax(1)
    ce = -(log_p[0, 0] + log_p[1, 2]) / 2
    rb = (max(0.0, 0.1 - (0.3 - 0.5)) + max(0.0, 0.1 - (0.5 - 0.2))) / 2
    torch.testing.assert_close(hard["ce"], ce)
    torch.testing.assert_close(hard["loss"], ce + rb)
    soft_target = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    soft = RANCriterion(rb_weight=0.0)(out, soft_target)
    torch.testing.assert_close(soft["loss"], -(soft_target * log_p).sum(1).mean())


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    model = RegionAttentionNet(**SMALL, num_classes=3).train()
    images, target = torch.rand(6, 3, 48, 48), torch.tensor([0, 1, 2, 0, 1, 2])
    crit = RANCriterion()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = crit(model.forward_with_attention(images), target)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    ("argument", "value"),
    [("num_classes", 10**12), ("num_classes", -1), ("num_classes", 2.5), ("in_chans", 0), ("in_chans", 99)]
    + [("drop_rate", float("nan")), ("drop_rate", 1.0), ("region_size", 10**6), ("region_size", "32")]
    + [("region_size", 32.7), ("region_size", (32, 32, 32)), ("relation_attention", "no")],
)
def test_constructor_arguments_out_of_range_are_one_line_naming_them(argument, value):
    """What a folder's config.json may not say, the constructor may not take either (10^12 classes was an
    allocator RuntimeError, a NaN dropout failed only in training, 'no' meant True)."""
    with pytest.raises(ValueError, match=rf"^{argument}: expected"):
        RegionAttentionNet(**{**SMALL, argument: value})


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: RegionBiasedLoss(float("nan")), "margin"),
        (lambda: RegionBiasedLoss(float("inf")), "margin"),
        (lambda: RANCriterion(rb_weight=float("nan")), "rb_weight"),
        (lambda: RANCriterion(rb_weight=-1), "rb_weight"),
        (lambda: RANCriterion(label_smoothing=float("nan")), "label_smoothing"),
        (lambda: RegionAttentionNet(**SMALL).reset_classifier(-1), "num_classes"),
    ],
)
def test_loss_and_classifier_numbers_are_checked(make, match):
    with pytest.raises(ValueError, match=rf"^{match}: expected"):
        make()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m(torch.rand(3, 48, 48)), "images: expected a \\(B, 3, H, W\\)"),
        (lambda m: m(torch.rand(1, 1, 48, 48)), "expected 3 channels"),
        (lambda m: m(torch.rand(1, 3, 1, 48)), "H, W >= 2"),
        (lambda m: m(torch.rand(1, 3, 48, 48), torch.rand(5, 4)), "boxes: expected \\(6, 4\\)"),
        (lambda m: m.forward_regions(torch.rand(1, 5, 3, 32, 32)), "K=6"),
        (lambda m: m.forward_regions(torch.rand(1, 6, 3, 16, 16)), "regions: expected"),
        (lambda m: m.forward_regions(torch.rand(6, 3, 32, 32)), "regions: expected"),
    ],
)
def test_bad_input_tensors(call, match):
    model = RegionAttentionNet(**SMALL).eval()
    with pytest.raises(ValueError, match=match):
        call(model)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ((0.1, 0.2, 1.2, 0.9), "within \\[0, 1\\]"),
        ((-0.1, 0.2, 0.8, 0.9), "must be within \\[0, 1\\]"),
        ((0.6, 0.2, 0.3, 0.9), "must have x1 > x0 and y1 > y0"),
        ((0.1, 0.5, 0.8, 0.5), "x1 > x0 and y1 > y0"),
        ((0.1, float("nan"), 0.8, 0.9), "finite"),
        ((0.1, 0.2, float("inf"), 0.9), "finite"),
    ],
)
def test_per_image_boxes_are_checked_like_regions(bad, match):
    model = RegionAttentionNet(**SMALL).eval()
    images = torch.rand(2, 3, 48, 48)
    boxes = model.region_boxes.expand(2, -1, -1).clone()
    boxes[1, 3] = torch.tensor(bad)
    with pytest.raises(ValueError, match=r"boxes\[1\]\[3\]: .*" + match):
        model(images, boxes)
    with pytest.raises(ValueError, match=r"boxes\[3\]: .*" + match):
        model.forward_with_attention(images, boxes[1])  # one (K, 4) list for the whole batch
    with pytest.raises(ValueError, match="expected floating-point fractions"):
        model(images, (boxes * 0).long())


def test_checked_boxes_still_trace_script_and_export():
    """The value check runs only in eager mode: tracing (ONNX) and TorchScript keep working."""
    model = RegionAttentionNet(**SMALL).eval()
    images = torch.rand(2, 3, 48, 48)
    boxes = jitter_boxes(
        model.region_boxes, 2, scale=0.1, translate=0.05, generator=torch.Generator().manual_seed(0)
    )
    expected = model(images, boxes)
    with torch.no_grad():
        traced = torch.jit.trace(model, (images, boxes), check_trace=False)
    torch.testing.assert_close(traced(images, boxes), expected.detach())
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(images, boxes), expected)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_images_say_what_the_model_expects(dtype):
    model = RegionAttentionNet(**SMALL).eval()
    images = torch.randint(0, 2 if dtype == torch.bool else 256, (2, 3, 48, 48)).to(dtype)
    with pytest.raises(ValueError, match=r"floating-point pixels \(0\.\.1.*FaceTransform\.normalize"):
        model(images)
    with pytest.raises(ValueError, match="floating-point"):
        model.forward_regions(torch.zeros(1, 6, 3, 32, 32, dtype=dtype))


@pytest.mark.parametrize("image_dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("model_dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_half_bfloat16_double_images_and_models_work(image_dtype, model_dtype):
    """Any float image dtype into any model dtype: the crop runs in fp32 and the crops take the backbone's
    dtype, so the logits match the fp32 computation on the same pixels up to the model dtype's rounding."""
    torch.manual_seed(0)
    reference = RegionAttentionNet(**SMALL).eval()
    model = RegionAttentionNet(**SMALL).eval()
    model.load_state_dict(reference.state_dict())
    model = model.to(model_dtype)
    images = torch.rand(3, 3, 48, 48).to(image_dtype)
    with torch.no_grad():
        expected = reference(images.float())
        got = model(images)
    assert got.dtype == model_dtype
    tolerance = 0.1 if model_dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(got.float(), expected, rtol=0, atol=tolerance * expected.abs().max().item())


@pytest.mark.parametrize("face", [24, 48])  # matrix-product cut and RoIAlign
def test_bf16_model_crops_the_right_images_of_a_batch_of_600(face):
    """A model cast to bf16 (not autocast) cuts its crops in fp32: box corners and batch indices above
    256 would round in bf16 and cut a neighbour's face."""
    torch.manual_seed(0)
    model = RegionAttentionNet(**SMALL).eval()
    fp32_crops = None
    images = torch.rand(600, 3, face, face).bfloat16()
    images += torch.arange(600).view(-1, 1, 1, 1).bfloat16()  # every image distinct
    boxes = jitter_boxes(model.region_boxes, 600, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fp32_crops = [model.cut(images.float()), model.cut(images.float(), boxes)]
        model = model.bfloat16()
        assert model.region_boxes.dtype == torch.float32
        assert torch.equal(model.region_boxes, torch.tensor(REGION_PRESETS["ferplus6"], dtype=torch.float32))
        bf16_crops = [model.cut(images), model.cut(images, boxes)]
    for got, expected in zip(bf16_crops, fp32_crops):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, expected.bfloat16(), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"regions": []}, "empty list"),
        ({"regions": [(0, 0, 1.2, 1)]}, "within \\[0, 1\\]"),
        ({"regions": [(0.5, 0, 0.5, 1)]}, "x1 > x0"),
        ({"regions": [(0, 0, 1)]}, "4 numbers"),
        ({"regions": "nope"}, "unknown preset"),
        ({"backbone": "not_a_model"}, "backbone: unknown timm model 'not_a_model'"),
        ({"attention": "relu"}, "attention"),
        ({"region_size": 4}, "region_size"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RegionAttentionNet(**{**SMALL, **kwargs})


def _hf_cache_snapshot(cache_dir, repo_id: str, files: dict) -> None:
    """Lay out files the way huggingface_hub's cache stores a downloaded repo revision."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for name, write in files.items():
        write(snapshot / name)


def test_pretrained_true_loads_timm_backbone_weights_from_the_hub_cache(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(7)
    published = timm.create_model("test_resnet", num_classes=1000).state_dict()
    _hf_cache_snapshot(
        tmp_path, "timm/test_resnet.r160_in1k", {"model.safetensors": lambda p: save_file(published, p)}
    )
    model = timm.create_model(
        "ran",
        backbone="test_resnet",
        region_size=32,
        pretrained=True,
        backbone_kwargs={"cache_dir": str(tmp_path)},
    )
    loaded = model.backbone.state_dict()
    for key, value in published.items():
        if not key.startswith("fc.") and value.is_floating_point():
            torch.testing.assert_close(loaded[key], value)
    # without pretrained, the backbone keeps its random initialisation
    fresh = timm.create_model("ran", backbone="test_resnet", region_size=32)
    assert not torch.equal(fresh.backbone.state_dict()["conv1.0.weight"], published["conv1.0.weight"])


def test_a_backbone_of_one_input_size_takes_the_regions_and_saves(tmp_path):
    """ViT / Swin take only their own input size (fixed_input_size): built for the region size, a RAN
    around one ran (an AssertionError at the first forward before) and reloads to the same logits."""
    import ran

    torch.manual_seed(0)
    model = timm.create_model("ran", backbone="test_vit", region_size=48).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(images)
        folder = ran.save_pretrained(model, tmp_path / "vit")
        torch.testing.assert_close(ran.load_model(folder)(images), logits, rtol=0, atol=1e-6)
    assert model.backbone.patch_embed.img_size == (48, 48)


def test_numpy_numbers_are_taken_as_python_numbers():
    """num_classes=np.int64(7) worked before the constructor's checks; it must still, and be saved as 7."""
    import json

    import numpy as np

    model = RegionAttentionNet(**{**SMALL, "region_size": np.int64(32)}, num_classes=np.int64(7))
    assert model.num_classes == 7 and type(model.num_classes) is int and model.region_size == [32, 32]
    model.reset_classifier(np.int64(3))
    assert type(model.num_classes) is int and json.loads(json.dumps(model.ran_config()))
    with pytest.raises(ValueError, match="num_classes: expected an integer"):
        RegionAttentionNet(**SMALL, num_classes=np.float64(7.0))
