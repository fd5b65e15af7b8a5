"""Model registry and the FER2013 CNNs that fer-tune searches over.

Every model maps a normalized float tensor [B, 1, 48, 48] to logits [B, num_classes],
works with `model.to(memory_format=torch.channels_last)` and under bf16 autocast.

    >>> import torch
    >>> from fer_tune.core.models import create_model, list_models
    >>> model = create_model("model3", kernel_size=3, padding=1, dropout=0.5)
    >>> model(torch.zeros(2, 1, 48, 48)).shape
    torch.Size([2, 7])

- registry: `register_model`, `create_model`, `list_models`, `Knobs`, and each model's
  `Capabilities` (which of pretrained, freeze_depth, input_size, dense_units, width and
  kernel_size/padding it takes), checked by `knob_problem` at build and at config load;
- seed_cnns: the seed projects' CNNs trained from scratch (basic ... vgg);
- transfer: torchvision backbones with a new head (resnet18/34 adapted to 48 px, resnet50,
  vgg16, vgg16_bn, efficientnet_b0): pretrained, freeze_depth, input_size, dense_units;
- rmn: the Residual Masking Network (Pham et al. 2020) on a ResNet-34 trunk;
- imagenet: ImageNet weights from the local torch hub cache, fetched once by a sweep's driver
  (`fetch_pretrained`, `check_pretrained_available`).
"""

# isort: off
# Importing a family registers its models, and registration order is list_models()'s order.
from fer_tune.core.models import seed_cnns  # noqa: F401
from fer_tune.core.models import transfer  # noqa: F401
from fer_tune.core.models import rmn  # noqa: F401

# isort: on
from fer_tune.core.models.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_pretrained_available,
    fetch_pretrained,
    weights_path,
)
from fer_tune.core.models.registry import (
    ALL_BLOCKS,
    KERNEL_SIZES,
    MODELS,
    NUM_CLASSES,
    PADDINGS,
    TRANSFER_SIZES,
    Capabilities,
    Knobs,
    capabilities,
    create_model,
    knob_problem,
    list_models,
    register_model,
    resolved_input_size,
)
from fer_tune.core.models.transfer import RESNET_BLOCKS

__all__ = [
    "ALL_BLOCKS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KERNEL_SIZES",
    "MODELS",
    "NUM_CLASSES",
    "PADDINGS",
    "RESNET_BLOCKS",
    "TRANSFER_SIZES",
    "Capabilities",
    "Knobs",
    "capabilities",
    "check_pretrained_available",
    "fetch_pretrained",
    "create_model",
    "knob_problem",
    "list_models",
    "register_model",
    "resolved_input_size",
    "weights_path",
]
