"""Tiny models of every variant: input forms, output shapes, frozen backbone, and a few training steps."""

import pytest
import torch
import torchvision
from torchvision.models._api import WeightsEnum

import model
from deformable_detr.data.batching import pad_images

TINY = {
    "backbone": "resnet18", "hidden_dim": 32, "nheads": 2, "enc_layers": 1, "dec_layers": 2,
    "dim_feedforward": 64, "num_queries": 12, "enc_n_points": 2, "dec_n_points": 2, "dropout": 0.0,
    "num_classes": 5,
}
VARIANTS = {
    "base": {},
    "refine": {"with_box_refine": True},
    "two_stage": {"with_box_refine": True, "two_stage": True},
}
TARGETS = [
    {"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.3, 0.3, 0.3, 0.4], [0.7, 0.6, 0.3, 0.3]])},
    {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.4]])},
]


def _images() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(3, 96, 128, generator=generator), torch.randn(3, 112, 96, generator=generator)]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_outputs_have_the_documented_shapes(variant: str) -> None:
    torch.manual_seed(0)
    detector, _, postprocessors = model.build_model({**TINY, **VARIANTS[variant]})
    detector.eval()
    with torch.no_grad():
        outputs = detector(_images())
    assert outputs["pred_logits"].shape == (2, 12, 5)
    assert outputs["pred_boxes"].shape == (2, 12, 4)
    assert ((outputs["pred_boxes"] >= 0) & (outputs["pred_boxes"] <= 1)).all()
    assert len(outputs["aux_outputs"]) == 1 and outputs["aux_outputs"][0]["pred_logits"].shape == (2, 12, 5)
    if variant == "two_stage":
        # one proposal per encoder position: 4 levels of a 112x128 batch (strides 8, 16, 32, 64)
        positions = 14 * 16 + 7 * 8 + 4 * 4 + 2 * 2
        assert outputs["enc_outputs"]["pred_logits"].shape == (2, positions, 5)
        assert outputs["enc_outputs"]["pred_boxes"].shape == (2, positions, 4)
    else:
        assert "enc_outputs" not in outputs
    results = postprocessors["bbox"](outputs, torch.tensor([[480, 640], [560, 480]]))
    # 12 queries x 5 classes: fewer pairs than the usual 100, so all of them
    assert [tuple(r["boxes"].shape) for r in results] == [(60, 4), (60, 4)]
    assert (results[0]["boxes"][:, 2:] >= results[0]["boxes"][:, :2]).all()
    assert (results[0]["scores"][:-1] >= results[0]["scores"][1:]).all()


def test_list_of_images_equals_the_padded_batch_with_its_mask() -> None:
    torch.manual_seed(0)
    detector, _, _ = model.build_model({**TINY, **VARIANTS["two_stage"]})
    detector.eval()
    images = _images()
    batch, mask = pad_images(images)
    with torch.no_grad():
        from_list = detector(images)
        from_batch = detector(batch, mask)
    assert torch.equal(from_list["pred_logits"], from_batch["pred_logits"])
    assert torch.equal(from_list["pred_boxes"], from_batch["pred_boxes"])


def test_bad_inputs_are_rejected_with_their_shapes() -> None:
    detector, _, _ = model.build_model(TINY)
    with pytest.raises(ValueError, match="mask must be bool"):
        detector(torch.zeros(1, 3, 64, 64), torch.zeros(1, 32, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="got \\[3, 64, 64\\]"):
        detector(torch.zeros(3, 64, 64))


@pytest.mark.parametrize(("lr_backbone", "trainable"), [(0.0, set()), (1e-5, {"layer2", "layer3", "layer4"})])
def test_only_layer2_to_4_of_the_backbone_train_and_only_with_a_learning_rate(lr_backbone: float,
                                                                              trainable: set) -> None:
    detector, _, _ = model.build_model({**TINY, "lr_backbone": lr_backbone})
    layers = {name.split(".")[3] for name, p in detector.named_parameters()
              if name.startswith("backbone.") and p.requires_grad}
    assert layers == trainable


@pytest.mark.parametrize(
    ("count", "trainable"),
    [(0, set()), (1, {"layer4"}), (4, {"layer1", "layer2", "layer3", "layer4"}),
     (5, {"conv1", "layer1", "layer2", "layer3", "layer4"})],  # frozen batch norm has no parameters
)
def test_trainable_backbone_layers_counts_stages_from_the_top(count: int, trainable: set) -> None:
    detector, _, _ = model.build_model({**TINY, "lr_backbone": 1e-5, "trainable_backbone_layers": count})
    layers = {name.split(".")[3] for name, p in detector.named_parameters()
              if name.startswith("backbone.") and p.requires_grad}
    assert layers == trainable


def test_batch_norm_backbone_normalises_with_batch_statistics_and_updates_its_running_statistics() -> None:
    detector, criterion, _ = model.build_model(
        {**TINY, "lr_backbone": 1e-5, "backbone_norm": "batch_norm", "trainable_backbone_layers": 5}
    )
    norms = [m for m in detector.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(isinstance(m, torchvision.ops.FrozenBatchNorm2d) for m in detector.backbone.modules())
    before = norms[0].running_mean.clone()
    detector.train()
    losses = criterion(detector(_images()), TARGETS)
    criterion.total_loss(losses).backward()
    assert not torch.equal(norms[0].running_mean, before)
    assert all(p.requires_grad and p.grad is not None for p in norms[0].parameters())
    detector.eval()
    same_size = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pair, alone = detector(same_size)["pred_logits"], detector(same_size[:1])["pred_logits"]
    # In evaluation the running statistics are used: an image's output does not depend on its batch.
    torch.testing.assert_close(pair[:1], alone, rtol=1e-4, atol=1e-4)


def test_channels_last_backbone_computes_the_same_outputs_and_gradients_up_to_rounding() -> None:
    """channels_last changes the memory layout of the backbone's weights and input, not the arithmetic (checked in
    float64, where a different summation order stays far below the bar)."""
    results = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        detector, criterion, _ = model.build_model(
            {**TINY, "lr_backbone": 1e-5, "backbone_norm": "batch_norm", "trainable_backbone_layers": 5,
             "channels_last": channels_last}
        )
        detector.double()
        conv = detector.backbone[0].body.conv1.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) is channels_last
        detector.train()
        outputs = detector([image.double() for image in _images()])
        criterion.total_loss(criterion(outputs, TARGETS)).backward()
        results[channels_last] = (outputs["pred_boxes"].detach(), conv.grad.clone())
    for plain, last in zip(results[False], results[True], strict=True):
        scale = plain.abs().max()
        assert (plain - last).abs().max() <= 1e-10 * scale


@pytest.mark.parametrize(
    "options",
    [{"num_feature_levels": 1}, {"position_embedding": "learned"}, {"backbone": "resnet34", "num_feature_levels": 5},
     {"backbone": "resnet10", "backbone_norm": "batch_norm", "lr_backbone": 1e-5, "trainable_backbone_layers": 5}],
    ids=["single-level", "learned-position", "resnet34-5-levels", "resnet10-batch-norm"],
)
def test_other_options_build_and_run(options: dict) -> None:
    detector, criterion, _ = model.build_model({**TINY, **options})
    outputs = detector(_images())
    losses = criterion(outputs, TARGETS)
    total = criterion.total_loss(losses)
    total.backward()
    assert torch.isfinite(total)


def test_resnet10_has_one_basic_block_per_stage_and_no_pretrained_weights() -> None:
    detector, _, _ = model.build_model({**TINY, "backbone": "resnet10"})
    body = detector.backbone[0].body
    assert [len(getattr(body, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert [type(block) for block in body.layer2] == [torchvision.models.resnet.BasicBlock]
    with pytest.raises(ValueError, match="resnet10 has no pretrained weights"):
        model.build_model({**TINY, "backbone": "resnet10", "pretrained_backbone": True})


@pytest.mark.parametrize("backbone", ["resnet10", "resnet34"])
def test_narrow_layer4_feeds_its_width_to_the_projections_and_trains_every_block(backbone: str) -> None:
    torch.manual_seed(0)
    options = {**TINY, "backbone": backbone, "backbone_layer4_channels": 48, "lr_backbone": 1e-5}
    detector, criterion, _ = model.build_model(options)
    body = detector.backbone[0].body
    reference, _, _ = model.build_model({**TINY, "backbone": backbone})
    assert len(body.layer4) == len(reference.backbone[0].body.layer4)  # the blocks of the named ResNet
    assert body.layer4[0].conv1.weight.shape == (48, 256, 3, 3)
    assert body.layer4[0].downsample[0].weight.shape == (48, 256, 1, 1)
    assert all(block.conv2.weight.shape == (48, 48, 3, 3) for block in body.layer4)
    # layer4's map goes to the third projection, and the strided extra level starts from it too
    assert detector.backbone.num_channels == [128, 256, 48]
    assert [projection[0].in_channels for projection in detector.input_proj] == [128, 256, 48, 48]
    # He-normal (fan-out) like torchvision's stages: std sqrt(2 / (48 * 9))
    weight = body.layer4[0].conv2.weight
    assert 0.8 < weight.std().item() / (2 / (48 * 9)) ** 0.5 < 1.2
    outputs = detector(_images())
    criterion.total_loss(criterion(outputs, TARGETS)).backward()
    assert all(parameter.grad is not None and parameter.grad.abs().sum() > 0
               for parameter in body.layer4.parameters())


@pytest.mark.parametrize(
    ("options", "message"),
    [({"backbone": "resnet50"}, "needs a basic-block ResNet"),
     ({"backbone": "resnet18", "pretrained_backbone": True}, "changes layer4, so the pretrained weights"),
     ({"backbone": "resnet18", "backbone_layer4_channels": 0}, "must be >= 1")],
)
def test_narrow_layer4_is_refused_where_it_cannot_be_built(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"'backbone_layer4_channels' {message}"):
        model.build_model({**TINY, "backbone_layer4_channels": 64, **options})


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_tiny_model_trains_with_finite_decreasing_loss(variant: str) -> None:
    torch.manual_seed(0)
    detector, criterion, _ = model.build_model({**TINY, **VARIANTS[variant], "lr_backbone": 1e-4})
    detector.train()
    optimizer = torch.optim.AdamW([p for p in detector.parameters() if p.requires_grad], lr=1e-3)
    images = _images()
    history = []
    for _ in range(8):
        losses = criterion(detector(images), TARGETS)
        total = criterion.total_loss(losses)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert all(torch.isfinite(torch.tensor(history)))
    assert history[-1] < 0.8 * history[0], history


def test_pretrained_backbone_loads_torchvision_imagenet_weights_into_frozen_batch_norm(monkeypatch) -> None:
    # No download in tests: torchvision's weight loader returns the state_dict of a locally built ResNet-18
    # (ordinary BatchNorm2d, so it also carries num_batches_tracked, as torchvision's files may).
    torch.manual_seed(5)
    imagenet = torchvision.models.resnet18().state_dict()
    requested = []

    def fake_get_state_dict(weights, *args, **kwargs):
        requested.append(str(weights))
        return imagenet

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_get_state_dict)
    detector, _, _ = model.build_model({**TINY, "pretrained_backbone": True})
    assert requested == ["ResNet18_Weights.IMAGENET1K_V1"]
    body = detector.backbone[0].body.state_dict()
    for key, value in body.items():
        assert torch.equal(value, imagenet[key]), key
