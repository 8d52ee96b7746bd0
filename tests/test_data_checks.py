"""The data check before training (each problem it names, `data.check` stop / skip / off) and
`data.on_bad_image` (undecodable images at run time: error, or skipped and left out of evaluation)."""

import json
import logging
import os
import re
import shutil

import pytest
import torch

import data
from deformable_detr.data import checks
from deformable_detr.data.checks import DataCheckError
from deformable_detr.data.images import ImageDecodeError
from deformable_detr.data.synthetic import write_split
from deformable_detr.training.coco_eval import CocoDetectionReducer

SPLITS = {"train": {"images": "pictures", "annotations": "labels/train.json"},
          "val": {"images": "pictures", "annotations": "labels/val.json"}}


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("clean"))
    write_split(root, "train", 8, 64, seed=5, category_ids=[3, 17, 42], layout="flat")
    write_split(root, "val", 4, 64, seed=5, category_ids=[3, 17, 42], layout="flat")
    os.rename(os.path.join(root, "images"), os.path.join(root, "pictures"))
    os.makedirs(os.path.join(root, "labels"))
    for split in ("train", "val"):
        os.rename(os.path.join(root, f"{split}.json"), os.path.join(root, "labels", f"{split}.json"))
    return root


@pytest.fixture
def root(clean_dir, tmp_path) -> str:
    copy = str(tmp_path / "set")
    shutil.copytree(clean_dir, copy)
    return copy


def config(root: str, **extra) -> dict:
    return {"backend": "local", "data_dir": root, "image_scale": 0.25, **SPLITS, **extra}


def edit_annotations(root: str, split: str, edit) -> str:
    path = os.path.join(root, "labels", f"{split}.json")
    with open(path) as f:
        dataset = json.load(f)
    edit(dataset)
    with open(path, "w") as f:
        json.dump(dataset, f)
    return path


def first_annotation(dataset: dict) -> dict:
    return dataset["annotations"][0]


def set_box(box):
    def edit(dataset):
        first_annotation(dataset)["bbox"] = box
    return edit


def set_category(dataset):
    first_annotation(dataset)["category_id"] = 99


def orphan(dataset):
    first_annotation(dataset)["image_id"] = 424242


def duplicate_annotation_id(dataset):
    dataset["annotations"][1]["id"] = dataset["annotations"][0]["id"]


def duplicate_image_id(dataset):
    dataset["images"][1]["id"] = dataset["images"][0]["id"]


def test_a_clean_dataset_passes_and_keeps_every_record(root):
    dataset = data.build_dataset("train", config(root))
    with open(os.path.join(root, "labels", "train.json")) as f:
        raw = json.load(f)
    assert len(dataset) == len(raw["images"]) and len(dataset.coco.anns) == len(raw["annotations"])


@pytest.mark.parametrize(
    ("edit", "kind", "detail"),
    [
        (set_box([4.0, 4.0, 0.0, 10.0]), checks.EMPTY_BOX, r"bbox \[4.0, 4.0, 0.0, 10.0\]"),
        (set_box([4.0, 4.0, 10.0, -3.0]), checks.EMPTY_BOX, r"-3.0"),
        (set_box([50.0, 4.0, 20.0, 10.0]), checks.OUTSIDE_BOX, r"in an image of 64x64"),
        (set_box([-5.0, 4.0, 20.0, 10.0]), checks.OUTSIDE_BOX, r"in an image of 64x64"),
        (set_box([4.0, 4.0, 10.0]), checks.BAD_BOX, r"not 4 finite numbers"),
        (set_category, checks.UNKNOWN_CATEGORY, r"category 99 is not one of the training categories"),
        (orphan, checks.UNKNOWN_IMAGE, ""),
        (duplicate_annotation_id, checks.DUPLICATE_ANNOTATION_ID, ""),
    ],
    ids=["zero-width", "negative-height", "past-right-edge", "left-of-image", "malformed", "unknown-category",
         "unknown-image", "duplicate-annotation-id"],
)
def test_each_annotation_problem_stops_the_run_naming_file_and_annotation(root, edit, kind, detail):
    annotation_file = edit_annotations(root, "train", edit)
    with open(annotation_file) as f:
        annotation = json.load(f)["annotations"][0]
    with pytest.raises(DataCheckError) as raised:
        data.build_dataset("train", config(root))
    message = str(raised.value)
    assert annotation_file in message and "1 problems" in message and "data.check: skip" in message
    assert f"{kind}: annotation id {annotation['id']} of image id" in message
    assert detail == "" or re.search(detail, message), message


def test_missing_image_and_duplicate_image_id_are_named_with_their_files(root):
    path = edit_annotations(root, "train", duplicate_image_id)
    with open(path) as f:
        images = json.load(f)["images"]
    os.remove(os.path.join(root, "pictures", images[2]["file_name"]))
    with pytest.raises(DataCheckError) as raised:
        data.build_dataset("train", config(root))
    message = str(raised.value)
    assert f"missing image: image id {images[2]['id']} ({images[2]['file_name']})" in message
    assert (f"duplicate image id: image id {images[1]['id']} ({images[1]['file_name']}): also "
            f"{images[0]['file_name']}") in message


def test_skip_leaves_bad_images_and_annotations_out_and_says_how_many(root, caplog):
    path = edit_annotations(root, "train", lambda d: [set_box([4.0, 4.0, 0.0, 1.0])(d), set_category(d)])
    with open(path) as f:
        raw = json.load(f)
    raw["annotations"][0]["category_id"] = 3  # only the box problem on the first, ...
    raw["annotations"][1]["category_id"] = 99  # ... an unknown category on the second
    with open(path, "w") as f:
        json.dump(raw, f)
    os.remove(os.path.join(root, "pictures", raw["images"][-1]["file_name"]))
    with caplog.at_level(logging.WARNING):
        dataset = data.build_dataset("train", config(root, check="skip"))
    missing_id = raw["images"][-1]["id"]
    annotations_of_missing = sum(a["image_id"] == missing_id for a in raw["annotations"])
    assert missing_id not in dataset.ids and len(dataset) == len(raw["images"]) - 1
    kept = set(dataset.coco.anns)
    assert raw["annotations"][0]["id"] not in kept and raw["annotations"][1]["id"] not in kept
    assert len(kept) == len(raw["annotations"]) - 2 - annotations_of_missing
    (warning,) = [r.getMessage() for r in caplog.records if "data check" in r.getMessage()]
    assert f"left out 1 images and {2 + annotations_of_missing} annotations for 3 problems" in warning
    assert "missing image" in warning and "unknown category id" in warning and path in warning
    for index in range(len(dataset)):
        _, target = dataset[index]
        assert set(target["labels"].tolist()) <= {0, 1, 2} or dataset.label_to_cat_id is None


def test_many_problems_are_listed_up_to_twenty_and_counted(root):
    def shrink_all(dataset):
        for annotation in dataset["annotations"]:
            annotation["bbox"][2] = 0.0

    path = edit_annotations(root, "train", shrink_all)
    with open(path) as f:
        total = len(json.load(f)["annotations"])
    assert total > checks.SHOWN_PROBLEMS
    with pytest.raises(DataCheckError) as raised:
        data.build_dataset("train", config(root))
    message = str(raised.value)
    assert message.count(f"  - {checks.EMPTY_BOX}") == checks.SHOWN_PROBLEMS
    assert f"... and {total - checks.SHOWN_PROBLEMS} more" in message and f"{total} problems" in message


def test_check_off_does_not_look(root):
    edit_annotations(root, "train", set_box([4.0, 4.0, 0.0, 10.0]))
    dataset = data.build_dataset("train", config(root, check="off"))
    _, target = dataset[0]  # the dataset still drops the empty box when it makes the target
    assert target["boxes"].shape[1] == 4


def test_image_size_comes_from_the_header_when_the_record_has_none(root):
    def unsized(dataset):
        for image in dataset["images"]:
            del image["width"], image["height"]
        first_annotation(dataset)["bbox"] = [60.0, 60.0, 30.0, 30.0]

    edit_annotations(root, "train", unsized)
    with pytest.raises(DataCheckError, match="in an image of 64x64"):
        data.build_dataset("train", config(root))


def test_validation_categories_are_checked_against_the_training_labels(root):
    edit_annotations(root, "val", set_category)
    train = data.build_dataset("train", config(root, labels="contiguous"))
    with pytest.raises(DataCheckError, match="category 99 is not one of the training categories"):
        data.build_dataset("val", config(root), train.label_space)


def test_the_check_costs_no_decoding(root, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("the data check decoded an image")

    monkeypatch.setattr("deformable_detr.data.coco.decode", no_decoding)
    os.remove(os.path.join(root, "pictures", sorted(os.listdir(os.path.join(root, "pictures")))[0]))
    with pytest.raises(DataCheckError, match="missing image"):
        data.build_dataset("train", config(root))


# ---------------------------------------------------------------------------------------- on_bad_image
def corrupt(root: str, dataset, index: int) -> str:
    path = os.path.join(root, "pictures", dataset.coco.imgs[dataset.ids[index]]["file_name"])
    with open(path, "wb") as f:
        f.write(b"not an image at all")
    return path


def test_an_undecodable_image_is_an_error_naming_file_and_image_id_by_default(root):
    dataset = data.build_dataset("train", config(root))
    path = corrupt(root, dataset, 3)
    with pytest.raises(ImageDecodeError, match=rf"image id {dataset.ids[3]} \({path}\)"):
        dataset[3]


def test_skip_replaces_an_undecodable_image_by_the_next_one_and_says_so(root, caplog):
    dataset = data.build_dataset("val", config(root, on_bad_image="skip"))  # val: no random augmentation
    corrupt(root, dataset, 1)
    corrupt(root, dataset, 2)
    with caplog.at_level(logging.WARNING):
        image, target = dataset[1]
        again, target_again = dataset[1]
    assert int(target["image_id"]) == dataset.ids[3]  # 1 and 2 are bad: the next good index
    assert torch.equal(image, again) and int(target_again["image_id"]) == dataset.ids[3]
    assert sorted(dataset.skipped) == [dataset.ids[1], dataset.ids[2]]
    warnings = [r.getMessage() for r in caplog.records if "on_bad_image" in r.getMessage()]
    assert len(warnings) == 2  # once per image, with a running count
    assert f"image id {dataset.ids[2]}" in warnings[1] and "2 image(s) left out" in warnings[1]
    assert int(dataset[0][1]["image_id"]) == dataset.ids[0]


def test_skip_fails_clearly_when_no_image_decodes(root):
    dataset = data.build_dataset("val", config(root, on_bad_image="skip"))
    for index in range(len(dataset)):
        corrupt(root, dataset, index)
    with pytest.raises(ImageDecodeError, match="none of the 4 images"):
        dataset[0]


def test_evaluation_leaves_skipped_images_out_and_says_so(root, caplog):
    dataset = data.build_dataset("val", config(root, on_bad_image="skip"))
    corrupt(root, dataset, 1)
    reducer = CocoDetectionReducer(dataset.coco, dataset.label_to_cat_id)
    for index in range(len(dataset)):  # index 1 gives image 2 a second time
        _, target = dataset[index]
        image_id = int(target["image_id"])
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in dataset.coco.imgToAnns[image_id]])
        labels = torch.tensor([dataset.label_space.label(a["category_id"]) for a in dataset.coco.imgToAnns[image_id]])
        reducer.update([image_id], [{"boxes": boxes, "labels": labels, "scores": torch.ones(len(boxes))}])
    image_ids, rows = reducer.per_slot_reduce()
    assert sorted(image_ids) == sorted(set(dataset.ids) - {dataset.ids[1]})
    assert len(rows) == sum(len(dataset.coco.imgToAnns[i]) for i in image_ids)  # the repeat counted once
    with caplog.at_level(logging.WARNING):
        metrics = reducer.cross_slot_reduce([(image_ids, rows)])
    assert metrics["mAP"] == pytest.approx(1.0)  # perfect on the images evaluated: the left-out one costs nothing
    assert any(f"over 3 of the 4 validation images: 1 left out (image ids [{dataset.ids[1]}]" in r.getMessage()
               for r in caplog.records)


def test_problem_descriptions_name_file_and_ids():
    problem = checks.Problem(checks.EMPTY_BOX, 7, "a.jpg", annotation_id=12, detail="bbox [0, 0, 0, 1]")
    assert problem.describe() == (
        "box of zero or negative size: annotation id 12 of image id 7 (a.jpg): bbox [0, 0, 0, 1]"
    )
