"""Class folders -> model outputs: output indices, WordNet ids, a labels file, or one folder per output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fx2trt_pipeline.calib_data import ImageFolderDataset, PreprocessSpec, imagenet_wnids, map_classes
from fx2trt_pipeline.errors import ConfigError


def test_imagenet_order_is_the_sorted_synsets() -> None:
    wnids = imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000 and list(wnids) == sorted(wnids)
    # torchvision's category names at the same indices: tabby cat, Egyptian cat, espresso, tripod
    assert (wnids[281], wnids[285], wnids[967], wnids[872]) == ("n02123045", "n02124075", "n07920052", "n04485082")


def test_each_folder_naming_maps_to_outputs(tmp_path: Path) -> None:
    assert map_classes(["285", "7"], 1000).index == {"285": 285, "7": 7}
    assert map_classes(["n02124075"], 1000).index == {"n02124075": 285}
    assert map_classes(["dog", "cat"], 2).index == {"cat": 0, "dog": 1}
    labels = tmp_path / "labels.txt"
    labels.write_text("n01 background\nn02 tabby, tabby cat\nespresso\n")
    mapped = map_classes(["tabby cat", "espresso", "n01"], 3, labels)
    assert mapped.index == {"tabby cat": 1, "espresso": 2, "n01": 0} and mapped.how == "labels file labels.txt"


@pytest.mark.parametrize(
    "classes, outputs, match",
    [
        (["cat", "dog"], 1000, "2 class folders \\(cat, dog\\) cannot be matched to the model's 1000 outputs"),
        (["12", "3"], 10, "\\['12'\\] name output indices, but the model has only 10 outputs"),
        (["n02124075"], 10, "WordNet ids .* but the model has 10"),
        (["n99999999"], 1000, "not ImageNet-1k classes"),
    ],
)
def test_mismatches_are_errors_with_a_remedy(classes: list[str], outputs: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        map_classes(classes, outputs)


def test_labels_file_must_cover_every_output_and_folder(tmp_path: Path) -> None:
    labels = tmp_path / "l.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(ConfigError, match="2 lines but the model has 3 outputs"):
        map_classes(["a"], 3, labels)
    with pytest.raises(ConfigError, match=r"\['c'\] match no line"):
        map_classes(["c"], 2, labels)
    with pytest.raises(ConfigError, match="not found"):
        map_classes(["a"], 2, tmp_path / "missing.txt")


def test_dataset_labels_follow_the_map(tmp_path: Path) -> None:
    from PIL import Image

    for name in ("967", "285"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name / "a.png")
    ds = ImageFolderDataset(tmp_path, PreprocessSpec(), with_labels=True)
    assert [ds[i][1] for i in range(2)] == [0, 1]  # position among the sorted folders, until mapped
    ds.use_label_map(map_classes(ds.classes, 1000))
    assert [ds[i][1] for i in range(2)] == [285, 967] and ds.label_source == "folder names are output indices"
