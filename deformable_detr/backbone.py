"""ResNet backbone with frozen batch norm, returning feature maps with their padding masks and positions."""

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

from .hparams import ModelConfig
from .position_encoding import build_position_encoding

# Output channels of layer2, layer3, layer4: basic blocks (ResNet-18/34) and bottlenecks (ResNet-50/101).
_CHANNELS = {
    "resnet18": (128, 256, 512),
    "resnet34": (128, 256, 512),
    "resnet50": (512, 1024, 2048),
    "resnet101": (512, 1024, 2048),
}

FeatureMap = tuple[torch.Tensor, torch.Tensor]  # features [B, C, h, w], mask bool [B, h, w] True at padding


def downsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Padding mask bool [B, H, W] resized (nearest) to [B, *size]."""
    return F.interpolate(mask[None].float(), size=size).to(torch.bool)[0]


class Backbone(nn.Module):
    """A torchvision ResNet with FrozenBatchNorm2d, giving layer2-4 (multi-scale) or only layer4.

    Args:
        resnet: the torchvision ResNet (its norm layers FrozenBatchNorm2d).
        num_channels: channels of layer2, layer3, layer4.
        train_backbone: when False every parameter is frozen; when True, conv1 and layer1 still are.
        return_interm_layers: return layer2-4 (strides 8, 16, 32) instead of layer4 alone.
        dilation: layer4 is dilated (stride 16 instead of 32).
    """

    def __init__(self, resnet: nn.Module, num_channels: tuple[int, int, int], train_backbone: bool,
                 return_interm_layers: bool, dilation: bool):
        super().__init__()
        for name, parameter in resnet.named_parameters():
            trainable = train_backbone and any(layer in name for layer in ("layer2", "layer3", "layer4"))
            parameter.requires_grad_(trainable)
        if return_interm_layers:
            return_layers = {"layer2": "0", "layer3": "1", "layer4": "2"}
            self.strides = [8, 16, 32]
            self.num_channels = list(num_channels)
        else:
            return_layers = {"layer4": "0"}
            self.strides = [32]
            self.num_channels = [num_channels[-1]]
        if dilation:
            self.strides[-1] = self.strides[-1] // 2
        self.body = IntermediateLayerGetter(resnet, return_layers=return_layers)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> list[FeatureMap]:
        """images [B, 3, H, W], mask bool [B, H, W] -> one (features, mask) per returned layer, shallow first."""
        outputs = self.body(images)
        return [(x, downsample_mask(mask, x.shape[-2:])) for _, x in sorted(outputs.items())]


class Joiner(nn.Sequential):
    """Backbone (index 0) and position encoding (index 1), named as in the authors' checkpoints."""

    def __init__(self, backbone: Backbone, position_embedding: nn.Module):
        super().__init__(backbone, position_embedding)
        self.strides = backbone.strides
        self.num_channels = backbone.num_channels

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[list[FeatureMap], list[torch.Tensor]]:
        """-> feature maps (as Backbone.forward) and their position encodings [B, hidden_dim, h, w]."""
        features = self[0](images, mask)
        positions = [self[1](x, m).to(x.dtype) for x, m in features]
        return features, positions


def build_backbone(config: ModelConfig) -> Joiner:
    weights = "IMAGENET1K_V1" if config.pretrained_backbone else None  # the weights the authors started from
    resnet = torchvision.models.get_model(
        config.backbone,
        weights=weights,
        replace_stride_with_dilation=[False, False, config.dilation],
        norm_layer=FrozenBatchNorm2d,
    )
    backbone = Backbone(
        resnet,
        _CHANNELS[config.backbone],
        train_backbone=config.train_backbone,
        return_interm_layers=config.num_feature_levels > 1,
        dilation=config.dilation,
    )
    return Joiner(backbone, build_position_encoding(config))
