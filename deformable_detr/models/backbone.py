"""ResNet backbone (frozen or trained batch norm), returning feature maps with their padding masks and positions."""

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

from deformable_detr.config.model import ModelSettings
from deformable_detr.models.position_encoding import build_position_encoding

# ResNet stages from the top; the first `trainable_backbone_layers` of them train.
_STAGES_TOP_DOWN = ("layer4", "layer3", "layer2", "layer1", "conv1")

# Output channels of layer2, layer3, layer4: basic blocks (ResNet-18/34) and bottlenecks (ResNet-50/101).
_CHANNELS = {
    "resnet10": (128, 256, 512),
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
    """A torchvision ResNet giving layer2-4 (multi-scale) or only layer4.

    Args:
        resnet: the torchvision ResNet (FrozenBatchNorm2d or BatchNorm2d norm layers).
        num_channels: channels of layer2, layer3, layer4.
        trainable_layers: how many stages train, from the top (_STAGES_TOP_DOWN): 0 freezes the backbone,
            3 trains layer2-4 as the authors do, 5 trains everything (the stem's conv1 with its bn1).
        return_interm_layers: return layer2-4 (strides 8, 16, 32) instead of layer4 alone.
        dilation: layer4 is dilated (stride 16 instead of 32).
        channels_last: run the ResNet in the channels-last memory layout (its weights and its input).
    """

    def __init__(self, resnet: nn.Module, num_channels: tuple[int, int, int], trainable_layers: int,
                 return_interm_layers: bool, dilation: bool, channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last
        stages = _STAGES_TOP_DOWN[:trainable_layers]
        if "conv1" in stages:
            stages += ("bn1",)
        for name, parameter in resnet.named_parameters():
            parameter.requires_grad_(name.split(".")[0] in stages)
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
        if channels_last:
            self.body.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> list[FeatureMap]:
        """images [B, 3, H, W], mask bool [B, H, W] -> one (features, mask) per returned layer, shallow first."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        outputs = self.body(images)
        # The transformer's input projections get the default layout (a no-op unless channels_last).
        return [(x.contiguous(), downsample_mask(mask, x.shape[-2:])) for _, x in sorted(outputs.items())]


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


def basic_stage(in_channels: int, out_channels: int, blocks: int, norm_layer: type[nn.Module]) -> nn.Sequential:
    """A ResNet stage of `blocks` basic blocks that halves the resolution: [B, in, h, w] -> [B, out, h/2, w/2].

    Built and initialised as torchvision builds its own stages (He-normal convolutions, fan-out; a strided
    1x1 convolution with its norm on the first block's shortcut), for any width.
    """
    shortcut = nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=2, bias=False), norm_layer(out_channels)
    )
    block = torchvision.models.resnet.BasicBlock
    stage = nn.Sequential(
        block(in_channels, out_channels, stride=2, downsample=shortcut, norm_layer=norm_layer),
        *(block(out_channels, out_channels, norm_layer=norm_layer) for _ in range(blocks - 1)),
    )
    for module in stage.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return stage


def build_backbone(settings: ModelSettings, train: bool) -> Joiner:
    """The ResNet of `settings` with its position encoding; `train`: whether the backbone trains at all."""
    norm_layer = FrozenBatchNorm2d if settings.backbone_norm == "frozen_batch_norm" else nn.BatchNorm2d
    if settings.backbone == "resnet10":  # one basic block per stage; torchvision has the class, not the name
        resnet = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], norm_layer=norm_layer)
    else:
        weights = "IMAGENET1K_V1" if settings.pretrained_backbone else None  # the weights the authors started from
        resnet = torchvision.models.get_model(
            settings.backbone,
            weights=weights,
            replace_stride_with_dilation=[False, False, settings.dilation],
            norm_layer=norm_layer,
        )
    channels = _CHANNELS[settings.backbone]
    if settings.backbone_layer4_channels is not None:
        resnet.layer4 = basic_stage(channels[1], settings.backbone_layer4_channels, len(resnet.layer4), norm_layer)
        channels = (*channels[:2], settings.backbone_layer4_channels)
    backbone = Backbone(
        resnet,
        channels,
        trainable_layers=settings.trainable_backbone_layers if train else 0,
        return_interm_layers=settings.num_feature_levels > 1,
        dilation=settings.dilation,
        channels_last=settings.channels_last,
    )
    return Joiner(backbone, build_position_encoding(settings))
