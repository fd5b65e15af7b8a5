"""The Residual Masking Network: shapes, gradients, and masks that really re-weight the trunk."""

import pytest
import torch
import torch.nn.functional as F

from fer_tune.core.models import create_model
from fer_tune.core.models.rmn import MASK_DEPTHS, STAGE_CHANNELS, MaskingBlock

torch.set_num_threads(1)  # the test machine is shared


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def rmn48():
    torch.manual_seed(0)
    return create_model("rmn", input_size=48)


def test_logits_at_48_and_at_the_papers_224():
    torch.manual_seed(0)
    model = create_model("rmn", num_classes=5).eval()  # default input_size: 224, as in the paper
    assert model.resize == 224
    with torch.no_grad():
        logits = model(images(1))  # a 48 px face, resized inside
    assert logits.shape == (1, 5) and torch.isfinite(logits).all()


def test_a_mask_per_stage_of_the_papers_depth(rmn48):
    assert [len(mask.down) for mask in rmn48.masks] == list(MASK_DEPTHS) == [4, 3, 2, 1]
    assert [mask.to_logits[-1].out_channels for mask in rmn48.masks] == list(STAGE_CHANNELS)


def test_masks_are_in_0_1_and_shaped_like_their_stage(rmn48):
    seen = []
    hooks = [mask.register_forward_hook(lambda m, args, out: seen.append((args[0], out))) for mask in rmn48.masks]
    with torch.no_grad():
        rmn48.train()(images(2))  # BatchNorm on batch statistics: a fresh net's eval-mode maps blow up
    for hook in hooks:
        hook.remove()
    assert [features.shape[1:] for features, _ in seen] == [(64, 12, 12), (128, 6, 6), (256, 3, 3), (512, 2, 2)]
    for features, mask in seen:
        assert mask.shape == features.shape and mask.min() > 0 and mask.max() < 1


def test_every_parameter_gets_a_gradient(rmn48):
    rmn48.train()
    rmn48.zero_grad()
    F.cross_entropy(rmn48(images(2)), torch.tensor([0, 3])).backward()
    for name, param in rmn48.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("stage", range(4))
def test_each_mask_changes_the_logits(rmn48, stage):
    """Zeroing a mask's last conv makes that mask 0.5 everywhere: (1 + mask) x features then only
    scales the stage uniformly, and the logits move; so the mask path is live."""
    rmn48.eval()
    x = images(2)
    with torch.no_grad():
        before = rmn48(x)
        out = rmn48.masks[stage].to_logits[-1]
        saved = out.weight.clone(), out.bias.clone()
        out.weight.zero_()
        out.bias.zero_()
        after = rmn48(x)
        out.weight.copy_(saved[0])
        out.bias.copy_(saved[1])
        assert torch.equal(rmn48(x), before)
    assert not torch.allclose(before, after, atol=1e-4)


def test_masking_block_handles_odd_sizes_down_to_one_pixel():
    block = MaskingBlock(8, depth=4).eval()
    for size in (3, 7, 12):
        x = torch.randn(1, 8, size, size)
        with torch.no_grad():
            assert block(x).shape == x.shape


def test_freeze_depth_freezes_the_trunk_not_the_masks():
    model = create_model("rmn", freeze_depth=0, input_size=48)  # head only, among the trunk's blocks
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.masks.parameters()) and all(
        p.requires_grad for p in model.head.parameters()
    )
