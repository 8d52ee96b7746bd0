"""The local backend over a synthetic COCO-format folder: item format, subsets, bad input, batching, seeding."""

import os
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

import data
from deformable_detr.data.images import ImageDecodeError
from deformable_detr.data.synthetic import write_split


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("coco"))
    write_split(root, "train", 12, 128, seed=3, crowd_fraction=0.2, empty_fraction=0.2)
    write_split(root, "val", 6, 128, seed=3)
    return root


def local(root: str, **extra) -> dict:
    return {"backend": "local", "data_dir": root, "download": False, "image_scale": 0.2, **extra}


def check_item(image: torch.Tensor, target: dict) -> None:
    assert image.dtype == torch.float32 and image.dim() == 3 and image.shape[0] == 3
    count = len(target["labels"])
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (count, 4)
    assert target["labels"].dtype == torch.int64
    assert target["area"].dtype == torch.float32 and target["area"].shape == (count,)
    assert target["iscrowd"].dtype == torch.int64 and target["iscrowd"].shape == (count,)
    assert target["image_id"].dtype == torch.int64 and target["image_id"].shape == ()
    assert target["orig_size"].dtype == torch.int64 and target["orig_size"].tolist() == [128, 128]
    assert target["size"].tolist() == list(image.shape[-2:])
    # A box spanning the whole crop can end 1 ulp past 1 after resize and division, as in the authors' code.
    assert bool(((target["boxes"] >= 0) & (target["boxes"] <= 1 + 1e-6)).all())


def test_items_follow_the_contract_for_train_and_val(coco_dir):
    for image_set in ("train", "val"):
        dataset = data.build_dataset(image_set, local(coco_dir))
        assert len(dataset) == (12 if image_set == "train" else 6)
        assert dataset.label_to_cat_id is None
        for index in range(len(dataset)):
            image, target = dataset[index]
            check_item(image, target)
            assert int(target["image_id"]) == dataset.ids[index]


def test_val_item_boxes_match_the_coco_annotations(coco_dir):
    dataset = data.build_dataset("val", local(coco_dir))
    image, target = dataset[0]
    annotations = dataset.coco.imgToAnns[dataset.ids[0]]
    assert target["labels"].tolist() == [a["category_id"] for a in annotations]
    x, y, w, h = annotations[0]["bbox"]
    expected = torch.tensor([(x + w / 2) / 128, (y + h / 2) / 128, w / 128, h / 128])
    torch.testing.assert_close(target["boxes"][0], expected)


def test_images_without_annotations_or_only_crowds_give_empty_targets(coco_dir):
    dataset = data.build_dataset("train", local(coco_dir))
    empty = [i for i, image_id in enumerate(dataset.ids) if not any(
        a["iscrowd"] == 0 for a in dataset.coco.imgToAnns[image_id])]
    crowd_only = [i for i in empty if dataset.coco.imgToAnns[dataset.ids[i]]]
    assert empty and crowd_only, "the fixture must hold empty and crowd-only images"
    for index in empty:
        image, target = dataset[index]
        check_item(image, target)
        assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_category_subset_keeps_only_its_images_and_remaps_labels(coco_dir):
    dataset = data.build_dataset("train", local(coco_dir, cat_ids=[4, 2]))
    assert dataset.label_to_cat_id == [4, 2]
    assert sorted(dataset.coco.cats) == [2, 4]
    assert all(a["category_id"] in (2, 4) for a in dataset.coco.anns.values())
    full = data.build_dataset("train", local(coco_dir))
    with_categories = {a["image_id"] for a in full.coco.anns.values() if a["category_id"] in (2, 4)}
    assert set(dataset.ids) == with_categories
    for index in range(len(dataset)):
        expected = sorted(
            dataset.label_to_cat_id.index(a["category_id"])
            for a in dataset.coco.imgToAnns[dataset.ids[index]] if a["iscrowd"] == 0
        )
        _, unaugmented = dataset.load(index)
        assert sorted(unaugmented["labels"].tolist()) == expected
        _, target = dataset[index]  # the random crop may drop boxes, never add labels
        assert set(target["labels"].tolist()) <= set(expected)


def test_category_subset_with_an_unknown_id_is_rejected(coco_dir):
    with pytest.raises(ValueError, match=r"cat_ids.*\[77\]"):
        data.build_dataset("val", local(coco_dir, cat_ids=[1, 77]))


def test_corrupt_or_truncated_image_error_names_file_and_image_id(coco_dir, tmp_path):
    root = str(tmp_path / "coco")
    shutil.copytree(coco_dir, root)
    dataset = data.build_dataset("val", local(root))
    image_id = dataset.ids[2]
    path = os.path.join(root, "val2017", dataset.coco.imgs[image_id]["file_name"])
    with open(path, "rb") as file:
        content = file.read()
    with open(path, "wb") as file:
        file.write(content[: len(content) // 2])
    with pytest.raises(ImageDecodeError, match=rf"image id {image_id} \({path}\)"):
        dataset[2]
    with open(path, "wb") as file:
        file.write(b"not an image at all" * 10)
    with pytest.raises(ImageDecodeError, match=rf"image id {image_id} \({path}\)"):
        dataset[2]
    with open(path, "wb"):
        pass
    with pytest.raises(ImageDecodeError, match=rf"image id {image_id} \({path}\): the file is empty"):
        dataset[2]
    os.remove(path)
    with pytest.raises(FileNotFoundError, match=rf"image id {image_id}: .*{path}"):
        dataset[2]
    image, target = dataset[1]  # the other images still load
    assert int(target["image_id"]) == dataset.ids[1]


def test_missing_annotation_file_names_the_expected_path(tmp_path):
    os.makedirs(tmp_path / "val2017")
    expected = os.path.join(str(tmp_path), "annotations", "instances_val2017.json")
    with pytest.raises(FileNotFoundError, match=expected):
        data.build_dataset("val", local(str(tmp_path)))
    elsewhere = str(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match=os.path.join(elsewhere, "instances_val2017.json")):
        data.build_dataset("val", local(str(tmp_path), annotations_dir=elsewhere))


def test_annotations_dir_option_reads_annotations_from_another_folder(coco_dir, tmp_path):
    shutil.copytree(os.path.join(coco_dir, "annotations"), tmp_path / "ann")
    dataset = data.build_dataset("val", local(coco_dir, annotations_dir=str(tmp_path / "ann")))
    assert len(dataset) == 6


def test_collate_pads_to_the_largest_image_and_masks_the_padding():
    image_a, image_b = torch.ones(3, 4, 6), torch.full((3, 5, 3), 2.0)
    targets = [{"labels": torch.tensor([1])}, {"labels": torch.tensor([], dtype=torch.int64)}]
    images, mask, out_targets = data.collate_fn([(image_a, targets[0]), (image_b, targets[1])])
    assert images.shape == (2, 3, 5, 6) and mask.shape == (2, 5, 6) and mask.dtype == torch.bool
    assert torch.equal(images[0, :, :4, :6], image_a) and bool((images[0, :, 4:] == 0).all())
    assert not mask[0, :4, :6].any() and mask[0, 4:].all()
    assert not mask[1, :5, :3].any() and mask[1, :, 3:].all()
    assert out_targets == targets


def run_epoch(dataset, seed: int) -> list[torch.Tensor]:
    loader = DataLoader(
        dataset, batch_size=3, shuffle=True, num_workers=2, collate_fn=data.collate_fn,
        worker_init_fn=data.seed_worker, generator=data.make_generator(seed),
    )
    return [images for images, _, _ in loader]


def test_seeded_workers_reproduce_the_same_augmented_batches(coco_dir):
    dataset = data.build_dataset("train", local(coco_dir))
    first, second, other = run_epoch(dataset, 7), run_epoch(dataset, 7), run_epoch(dataset, 8)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, other, strict=True))


def draw(generator: torch.Generator) -> list[int]:
    return torch.randint(1 << 30, (4,), generator=generator).tolist()


def test_generators_differ_between_ranks_and_repeat_for_a_seed():
    assert draw(data.make_generator(5, rank=1)) == draw(data.make_generator(5, rank=1))
    assert draw(data.make_generator(5, rank=0)) != draw(data.make_generator(5, rank=1))
    assert draw(data.make_generator(5)) != draw(data.make_generator(6))
