"""The model and loss settings of Deformable DETR: `ModelSettings`.

They are read from an experiment's `hyperparameters` mapping (the names Determined's configs use, which are
the authors' command-line names) by `deformable_detr.config.experiment.parse_hyperparameters`, which also
rejects keys that neither these settings nor `OptimizationSettings` own.
"""

import dataclasses
import math

from deformable_detr.config.parsing import HYPERPARAMETERS, require, require_choice

# Segmentation settings of the authors' command line: accepted so that their configs load, but the
# segmentation head is not part of this package, so `masks` must be false.
SEGMENTATION_KEYS: frozenset[str] = frozenset({"masks", "mask_loss_coef", "dice_loss_coef"})

# `num_classes: auto`: the class count comes from the training annotations.
AUTO_NUM_CLASSES = "auto"
BACKBONES = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101")
BASIC_BLOCK_BACKBONES = ("resnet10", "resnet18", "resnet34")
POSITION_EMBEDDINGS = ("sine", "v2", "learned", "v3")
BACKBONE_NORMS = ("frozen_batch_norm", "batch_norm")
# Settings that name one of a fixed set of choices.
CHOICES = {"backbone": BACKBONES, "position_embedding": POSITION_EMBEDDINGS, "backbone_norm": BACKBONE_NORMS}


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Model and loss settings; the defaults are those of the authors' command line.

    backbone: torchvision ResNet name, or "resnet10" (torchvision's ResNet with one basic block per stage: half
        a ResNet-18, for training from scratch; no pretrained weights). dilation: DC5 (dilate layer4 instead of
        striding).
    position_embedding: "sine" ("v2") or "learned" ("v3"). position_embedding_scale: sine normalisation scale.
    num_feature_levels: 1 (layer4 only) or >= 3 (layer2-4 plus num_feature_levels - 3 strided convolutions).
    enc_layers / dec_layers / dim_feedforward / hidden_dim / dropout / nheads: transformer sizes.
    num_queries: object queries (two-stage: proposals kept). enc_n_points / dec_n_points: sampling points.
    aux_loss: losses on every decoder layer. with_box_refine: iterative box refinement.
    two_stage: encoder proposals select the queries (requires with_box_refine).
    one_to_many_queries: extra two-stage proposals trained with one-to-many matching (hybrid matching, Jia et
        al., CVPR 2023): in training only, the next-best proposals form a second query group, hidden from the
        first group's self-attention, matched to the targets repeated `one_to_many_repeats` times, its losses
        weighted by `one_to_many_weight`; inference uses only the `num_queries` group. 0 (the authors') adds none.
    denoising_groups: query denoising (DN-DETR, Li et al., CVPR 2022), two-stage only: in training, this many
        noised copies of the targets as extra decoder queries (box from the noised box, content from the embedded
        noised label), hidden from the other queries, each trained to give back its target without matching;
        `denoising_box_noise` is DN-DETR's lambda (centre shift and side scaling), `denoising_label_noise` the
        probability of a random label. 0 (the authors') adds none.
    set_cost_*: Hungarian matching weights. *_loss_coef: loss weights. focal_alpha: focal loss alpha.
    trainable_backbone_layers: how many ResNet stages train when the backbone trains (`lr_backbone` > 0,
        an optimisation setting), counted from the top:
        3 = layer2-4 (the authors' choice for an ImageNet start), 4 adds layer1, 5 adds the stem (conv1).
    backbone_norm: "frozen_batch_norm" (the authors': fixed statistics, right for pretrained weights) or
        "batch_norm" (trained, batch statistics: what a backbone trained from scratch needs).
    num_classes: classifier outputs (91 = COCO category ids 1..90 plus the unused 0), or 'auto': as many as the
        training annotations need (`deformable_detr.data.labels.fit_num_classes` resolves it before the model
        is built; docs/datasets.md).
    nms_iou_threshold: post-processing per-class NMS IoU; 1.0 (the authors') applies none.
    pretrained_backbone: start the ResNet from torchvision's ImageNet weights (downloads them).
    backbone_layer4_channels: output channels of layer4 for the basic-block ResNets (resnet10/18/34), in place
        of their 512; None (the authors') keeps the ResNet as it is. A narrower layer4 has a fraction of the
        weights (layer4 holds three quarters of a ResNet-10's), and on a CPU a step's gradient all-reduce, weight
        casts and optimizer work scale with the weights, not with the image size. Trained from scratch only.
    channels_last: the backbone's convolutions in the channels-last memory layout (the same arithmetic in another
        order: equal up to float rounding; faster on CPUs, whose oneDNN convolutions prefer it, and for bf16 / fp16
        on GPUs); off by default, as the authors'.
    """

    backbone: str = "resnet50"
    dilation: bool = False
    position_embedding: str = "sine"
    position_embedding_scale: float = 2 * math.pi
    num_feature_levels: int = 4
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 1024
    hidden_dim: int = 256
    dropout: float = 0.1
    nheads: int = 8
    num_queries: int = 300
    dec_n_points: int = 4
    enc_n_points: int = 4
    aux_loss: bool = True
    with_box_refine: bool = False
    two_stage: bool = False
    one_to_many_queries: int = 0
    one_to_many_repeats: int = 6
    one_to_many_weight: float = 1.0
    denoising_groups: int = 0
    denoising_box_noise: float = 0.4
    denoising_label_noise: float = 0.2
    set_cost_class: float = 2.0
    set_cost_bbox: float = 5.0
    set_cost_giou: float = 2.0
    cls_loss_coef: float = 2.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0
    focal_alpha: float = 0.25
    trainable_backbone_layers: int = 3
    backbone_norm: str = "frozen_batch_norm"
    num_classes: int | str = 91
    nms_iou_threshold: float = 1.0
    pretrained_backbone: bool = False
    backbone_layer4_channels: int | None = None
    channels_last: bool = False

    def validate(self) -> None:
        """Raise ValueError for values out of range and for contradictory settings."""
        for name, choices in CHOICES.items():
            require_choice(HYPERPARAMETERS, name, getattr(self, name), choices)
        if self.dilation and self.backbone in BASIC_BLOCK_BACKBONES:
            raise ValueError(f"hyperparameter 'dilation': {self.backbone} (basic blocks) cannot be dilated")
        if self.pretrained_backbone and self.backbone == "resnet10":
            raise ValueError("hyperparameter 'pretrained_backbone': resnet10 has no pretrained weights")
        if self.backbone_layer4_channels is not None:
            _require("backbone_layer4_channels", self.backbone_layer4_channels >= 1, "must be >= 1 (or null)")
            _require("backbone_layer4_channels", self.backbone in BASIC_BLOCK_BACKBONES,
                     f"needs a basic-block ResNet ({', '.join(BASIC_BLOCK_BACKBONES)}), got {self.backbone!r}")
            _require("backbone_layer4_channels", not self.pretrained_backbone,
                     "changes layer4, so the pretrained weights would not fit: set pretrained_backbone false")
        if self.two_stage and not self.with_box_refine:
            # the authors' two-stage model scores proposals with the per-layer heads that only box
            # refinement creates (without it their code fails); their two-stage results use both
            raise ValueError("hyperparameter 'two_stage' requires 'with_box_refine': true")
        _require("one_to_many_queries", self.one_to_many_queries >= 0, "must be >= 0")
        _require("one_to_many_repeats", self.one_to_many_repeats >= 1, "must be >= 1")
        _require("one_to_many_weight", self.one_to_many_weight >= 0.0, "must be >= 0")
        if self.one_to_many_queries and not self.two_stage:
            raise ValueError("hyperparameter 'one_to_many_queries' requires 'two_stage': true (they are proposals)")
        _require("denoising_groups", self.denoising_groups >= 0, "must be >= 0")
        _require("denoising_box_noise", 0.0 <= self.denoising_box_noise <= 1.0, "must be in [0, 1]")
        _require("denoising_label_noise", 0.0 <= self.denoising_label_noise <= 1.0, "must be in [0, 1]")
        if self.denoising_groups and not self.two_stage:
            raise ValueError("hyperparameter 'denoising_groups' requires 'two_stage': true (the queries start from "
                             "boxes, as the proposals)")
        _require("nms_iou_threshold", 0.0 < self.nms_iou_threshold <= 1.0, "must be in (0, 1]")
        _require("trainable_backbone_layers", 0 <= self.trainable_backbone_layers <= 5, "must be in [0, 5]")
        _require("enc_layers", self.enc_layers >= 0, "must be >= 0")
        for name in ("dec_layers", "dim_feedforward", "hidden_dim", "nheads", "num_queries", "dec_n_points",
                     "enc_n_points"):
            _require(name, getattr(self, name) >= 1, "must be >= 1")
        if isinstance(self.num_classes, str):
            _require("num_classes", self.num_classes == AUTO_NUM_CLASSES,
                     f"must be an integer >= 1 or {AUTO_NUM_CLASSES!r}, got {self.num_classes!r}")
        else:
            _require("num_classes", self.num_classes >= 1, "must be >= 1 (or 'auto')")
        _require("position_embedding_scale", self.position_embedding_scale > 0, "must be > 0")
        # The backbone gives 3 maps (layer2-4) when more than one level is used, so 2 levels cannot be built.
        _require("num_feature_levels", self.num_feature_levels == 1 or self.num_feature_levels >= 3,
                 "must be 1 (layer4 only) or >= 3 (layer2-4 plus extra strided levels)")
        _require("hidden_dim", self.hidden_dim % self.nheads == 0, f"must be divisible by nheads ({self.nheads})")
        _require("hidden_dim", self.hidden_dim % 32 == 0, "must be a multiple of 32 (GroupNorm with 32 groups)")
        _require("dropout", 0.0 <= self.dropout < 1.0, "must be in [0, 1)")
        _require("focal_alpha", 0.0 <= self.focal_alpha <= 1.0, "must be in [0, 1]")
        for name in ("set_cost_class", "set_cost_bbox", "set_cost_giou", "cls_loss_coef", "bbox_loss_coef",
                     "giou_loss_coef"):
            _require(name, getattr(self, name) >= 0.0, "must be >= 0")
        if self.set_cost_class == 0 and self.set_cost_bbox == 0 and self.set_cost_giou == 0:
            raise ValueError("hyperparameters 'set_cost_class', 'set_cost_bbox', 'set_cost_giou' cannot all be 0")


def _require(name: str, condition: bool, message: str) -> None:
    require(HYPERPARAMETERS, name, condition, message)
