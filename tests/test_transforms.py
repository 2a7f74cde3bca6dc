"""ran.transforms: one transform, read from the model's config, that feeds faces as training did."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import ran  # noqa: F401
from ran.transforms import FaceTransform, record_transform, transform_for, transform_for_images


def _pixels(seed: int = 0, shape=(9, 11, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_grayscale_is_pils_luma_in_float():
    """Gray is PIL's 'L' weights without its rounding to whole pixels (the gray a gray-trained model
    computes itself)."""
    image = _pixels()
    fed = FaceTransform(grayscale=True)(image)
    luma = image.astype(np.float64) @ np.array([19595, 38470, 7471]) / 65536 / 255
    pil = np.asarray(Image.fromarray(image).convert("L"), dtype=np.float64) / 255
    assert fed.shape == (3, 9, 11) and np.abs(luma - pil).max() > 0  # the rounding is gone...
    for channel in fed:
        np.testing.assert_allclose(channel.numpy(), luma, rtol=0, atol=1e-6)
        assert np.abs(channel.numpy() - pil).max() <= 0.5 / 255 + 1e-6  # ...and was all that differed


def test_gray_faces_pass_through_unchanged_and_rgb_stays_rgb():
    gray = Image.fromarray(_pixels(1)[..., 0])  # a stored FERPlus-like "L" face
    expected = torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255.0)
    for channel in FaceTransform(grayscale=True)(gray):
        torch.testing.assert_close(channel, expected, rtol=0, atol=1e-6)
    colour = _pixels(2)
    fed = FaceTransform(grayscale=False)(colour)
    assert torch.equal(fed, torch.from_numpy(colour).permute(2, 0, 1).float() / 255.0)


def test_size_mean_and_std():
    transform = FaceTransform(size=(16, 20), mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    image = _pixels(3, (40, 50, 3))
    fed = transform(image)
    resized = np.asarray(Image.fromarray(image).resize((20, 16), Image.Resampling.BILINEAR), dtype=np.float32)
    expected = (resized / 255.0 - np.array([0.5, 0.25, 0.0])) / np.array([0.5, 0.25, 2.0])
    np.testing.assert_allclose(fed.numpy(), expected.transpose(2, 0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="interpolation"):
        FaceTransform(interpolation="lanczos9")


def test_the_model_config_decides_and_nothing_is_guessed():
    model = timm.create_model("ran", backbone="test_resnet", region_size=32)
    assert tuple(model.pretrained_cfg["label_names"])[:2] == ("neutral", "happiness")  # FERPlus names...
    assert model.input_color == "rgb"  # ...but no recorded colour: RGB
    fed = record_transform(model, FaceTransform(size=(48, 48), grayscale=True))
    # the model owns the contract (it makes its input gray itself); every path feeds it RGB at 48 px
    assert (model.input_color, model.face_size) == ("gray", [48, 48])
    assert fed == transform_for(model) and not fed.grayscale and fed.size == (48, 48)
    assert model.pretrained_cfg["input_size"] == (3, 48, 48)  # what timm's processors resize to
    assert transform_for(model, input_size=64).size == (64, 64)


def test_training_data_decides_what_is_recorded():
    from datasets import Dataset, Features
    from datasets import Image as ImageFeature

    model = timm.create_model("ran", backbone="test_resnet", region_size=32)
    gray = [Image.fromarray(_pixels(i, (48, 48, 3))).convert("L") for i in range(4)]
    split = Dataset.from_dict({"image": gray}, features=Features({"image": ImageFeature()}))
    assert transform_for_images(split, model) == FaceTransform(size=(48, 48), grayscale=True)
    mixed = Dataset.from_dict(
        {"image": [*gray[:3], Image.fromarray(_pixels(9, (48, 48, 3)))]},
        features=Features({"image": ImageFeature()}),
    )
    assert transform_for_images(mixed, model, image_size=32) == FaceTransform(size=(32, 32), grayscale=False)
