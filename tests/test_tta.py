"""Test-time augmentation: none, flip and ten-crop, scored by `evaluate` exactly as the deployed
`Predictor` (eager and TorchScript) predicts; ten-crop's random 40 px training crops."""

import warnings

import pytest
import torch
import torchvision.transforms.functional as TF
from scipy.stats import chisquare

from fer_tune.core import training
from fer_tune.core.augment import CROP_SIZE, TTA_MODES, random_crop, tta_views
from fer_tune.core.classifier import Predictor, build_model
from fer_tune.core.config import TrainConfig
from fer_tune.core.metrics import evaluate
from fer_tune.core.models import capabilities, create_model, list_models
from fer_tune.errors import FerTuneError

torch.set_num_threads(1)  # the test machine is shared

SMALL = dict(batch_size=16, augmentation="trans1", dropout=0.0)
NARROW = dict(model="custom6", width=0.25, **SMALL)  # a flatten classifier, sized by its input; 1/16 the FLOPs


def faces(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


def test_tencrop_views_are_torchvisions_ten_crop():
    x = faces(3)
    ours = tta_views(x, "tencrop")
    theirs = TF.ten_crop(x, [CROP_SIZE, CROP_SIZE])  # corners, centre, then the same of the mirror image
    assert len(ours) == len(theirs) == 10
    for got, expected in zip(ours, theirs):
        assert torch.equal(got, expected)


def test_none_and_flip_views():
    x = faces(2)
    assert [v.data_ptr() for v in tta_views(x, "none")] == [x.data_ptr()]
    original, mirror = tta_views(x, "flip")
    assert torch.equal(original, x) and torch.equal(mirror, TF.hflip(x))


def test_random_crop_draws_torchvisions_offsets_uniformly():
    """RandomCrop(40) on 48 px: the top-left corner is uniform over the 9 x 9 positions, and each
    crop is exactly TF.crop at its corner."""
    image = torch.arange(48 * 48, dtype=torch.float32).view(1, 1, 48, 48)
    n = 81 * 60
    crops = random_crop(image.expand(n, 1, 48, 48), torch.Generator().manual_seed(0))
    assert crops.shape == (n, 1, CROP_SIZE, CROP_SIZE)
    corner = crops[:, 0, 0, 0].long()
    top, left = corner // 48, corner % 48
    counts = torch.bincount(top * 9 + left, minlength=81)
    assert counts.numel() == 81 and counts.min() > 0  # 0..8 both ways, as torchvision's randint(0, h - 40 + 1)
    assert chisquare(counts.numpy()).pvalue > 1e-3
    for i in range(0, n, 500):
        assert torch.equal(crops[i], TF.crop(image[0], int(top[i]), int(left[i]), CROP_SIZE, CROP_SIZE))
    again = random_crop(image.expand(n, 1, 48, 48), torch.Generator().manual_seed(0))
    assert torch.equal(crops, again)  # the generator decides


def model_for(tta: str, **overrides):
    """A Normalized model built for what `tta` feeds it (custom6's classifier is sized by its input)."""
    torch.manual_seed(0)
    return build_model(TrainConfig(**{**NARROW, **overrides}, tta=tta), 7, 0.5, 0.25).eval()


@pytest.mark.parametrize("tta", TTA_MODES)
def test_evaluate_scores_what_the_predictor_predicts(tiny_data, tta):
    model, split = model_for(tta), tiny_data.validation
    result = evaluate(model, split, num_classes=7, tta=tta, keep_probabilities=True, batch_size=32)
    with torch.no_grad():
        expected = Predictor(model, tta=tta)(split.images)  # uint8 [N, 48, 48]: the deployed input
    assert torch.allclose(result["probabilities"], expected, atol=1e-5)
    assert result["accuracy"] == pytest.approx((expected.argmax(1) == split.labels).float().mean().item())
    assert result["loss"] == pytest.approx(torch.nn.functional.nll_loss(expected.log(), split.labels).item(), rel=1e-4)


def test_tencrop_differs_from_flip_and_from_none(tiny_data):
    model = model_for("flip", model="basic", width=1.0)  # global pooling: takes 48 and 40 px alike
    scores = {tta: evaluate(model, tiny_data.validation, 7, tta=tta, keep_probabilities=True) for tta in TTA_MODES}
    assert not torch.allclose(scores["tencrop"]["probabilities"], scores["flip"]["probabilities"], atol=1e-4)
    assert not torch.allclose(scores["flip"]["probabilities"], scores["none"]["probabilities"], atol=1e-4)


@pytest.mark.parametrize(
    "name,tta", [("custom6", tta) for tta in TTA_MODES] + [("efficientnet_b0", "tencrop"), ("rmn", "flip")]
)
def test_the_predictor_scripts_for_every_tta(name, tta):
    knobs = {"input_size": 48, "width": 1.0} if capabilities(name).resizes else {}
    predictor = Predictor(model_for(tta, model=name, **knobs), tta=tta).eval()
    with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export; deployments still use it
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(predictor)
    pixels = torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8)  # the deployed input: 48 px, whatever the tta
    with torch.no_grad():
        expected = predictor(pixels)
        assert torch.allclose(scripted(pixels), expected, atol=1e-5)
    assert expected.shape == (3, 7) and torch.allclose(expected.sum(1), torch.ones(3))


def test_an_unknown_tta_is_refused(tiny_data):
    model = model_for("flip")
    with pytest.raises(FerTuneError, match="unknown tta 'ten'; expected one of: none, flip, tencrop"):
        Predictor(model, tta="ten")
    with pytest.raises(FerTuneError, match="unknown tta True"):
        Predictor(model, True)  # the old flip_tta flag
    with pytest.raises(FerTuneError, match="unknown tta"):
        evaluate(model, tiny_data.validation, 7, tta="flips")


def test_tta_defaults_to_flip_and_sets_the_image_size():
    assert TrainConfig().tta == "flip" and TrainConfig().image_size == 48
    assert TrainConfig(tta="tencrop").image_size == CROP_SIZE == 40


@pytest.mark.parametrize("name", list_models())
def test_every_model_takes_ten_crops_when_built_for_them(name):
    native = {"input_size": 48} if capabilities(name).resizes else {}
    model = create_model(name, image_size=CROP_SIZE, **native).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, CROP_SIZE, CROP_SIZE)).shape == (2, 7)


def test_fit_with_tencrop_trains_on_random_40px_crops(tiny_data, monkeypatch):
    crops, states = [], []

    def spy(images, generator, size):
        crops.append((images.shape[-1], size))
        return random_crop(images, generator, size)

    monkeypatch.setattr(training, "random_crop", spy)
    history = training.fit(TrainConfig(**NARROW, tta="tencrop", epochs=1), tiny_data, lambda m, s: states.append(s))
    assert crops and set(crops) == {(48, CROP_SIZE)}  # every batch: augmented at 48 px, then cropped
    assert 0 <= history[0]["val_accuracy"] <= 1
    model = states[0].model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, CROP_SIZE, CROP_SIZE)).shape == (2, 7)  # built for 40 px
        with pytest.raises(RuntimeError):
            model(torch.rand(2, 1, 48, 48))  # its classifier is sized for the crops, not the face
    crops.clear()
    training.fit(TrainConfig(**NARROW, epochs=1), tiny_data)
    assert crops == []  # flip (the default) trains on whole faces
