"""The fake backend: in memory, deterministic per index, consistent with its COCO object."""

import torch

import data


def test_length_is_configurable_with_a_default_of_1000():
    assert len(data.build_dataset("train", {"backend": "fake"})) == 1000
    assert len(data.build_dataset("val", {"backend": "fake", "fake_length": 7})) == 7


def test_items_are_deterministic_per_index_and_differ_between_indices():
    dataset = data.build_dataset("val", {"backend": "fake", "fake_length": 5, "image_scale": 0.25})
    again = data.build_dataset("val", {"backend": "fake", "fake_length": 5, "image_scale": 0.25})
    for index in (0, 4, 2):
        image, target = dataset[index]
        image_again, target_again = again[index]
        assert torch.equal(image, image_again)
        assert all(torch.equal(target[key], target_again[key]) for key in target)
    assert not torch.equal(dataset[0][1]["boxes"][:1], dataset[1][1]["boxes"][:1])


def test_items_follow_the_contract():
    dataset = data.build_dataset("train", {"backend": "fake", "fake_length": 20, "image_scale": 0.25})
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert image.dtype == torch.float32 and image.shape[0] == 3
        assert target["size"].tolist() == list(image.shape[-2:])
        assert target["orig_size"].tolist() == [120, 160]
        assert target["boxes"].shape == (len(target["labels"]), 4) and target["labels"].dtype == torch.int64
        # A box spanning the whole crop can end 1 ulp past 1 after resize and division, as in the authors' code.
        assert bool(((target["boxes"] >= 0) & (target["boxes"] <= 1 + 1e-6)).all())
        assert set(target["labels"].tolist()) <= set(range(1, 91))


def test_coco_object_holds_the_same_boxes_as_the_targets():
    dataset = data.build_dataset("val", {"backend": "fake", "fake_length": 10, "image_scale": 0.25})
    assert sorted(dataset.coco.imgs) == list(range(1, 11))
    for index in range(10):
        _, target = dataset[index]
        annotations = dataset.coco.imgToAnns[int(target["image_id"])]
        height, width = target["orig_size"].tolist()
        boxes = torch.tensor([a["bbox"] for a in annotations])
        expected = torch.cat([boxes[:, :2] + boxes[:, 2:] / 2, boxes[:, 2:]], dim=1) / torch.tensor(
            [width, height, width, height]
        )
        torch.testing.assert_close(target["boxes"], expected)
        assert target["labels"].tolist() == [a["category_id"] for a in annotations]


def test_category_subset_remaps_labels_and_keeps_the_mapping():
    dataset = data.build_dataset("train", {"backend": "fake", "fake_length": 10, "cat_ids": [18, 1], "image_scale": 0.25})
    assert dataset.label_to_cat_id == [18, 1]
    assert sorted(dataset.coco.cats) == [1, 18]
    labels = torch.cat([dataset[index][1]["labels"] for index in range(10)])
    assert set(labels.tolist()) == {0, 1}


def test_train_and_val_are_different_images():
    train = data.build_dataset("train", {"backend": "fake", "fake_length": 3, "image_scale": 0.25})
    val = data.build_dataset("val", {"backend": "fake", "fake_length": 3, "image_scale": 0.25})
    assert train.annotations(0) != val.annotations(0)
