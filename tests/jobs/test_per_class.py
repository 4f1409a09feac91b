"""Which classes a classifier gets right: the confusion matrix counted while validating, per-class
accuracy on hand-made cases, per_class.json/.csv, the matrix as a picture, and the summary that
lists every class (so a study that down-weights one sees it pay)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jobs.common.confusion import (
    PER_CLASS_CSV,
    ClassReport,
    ConfusionCounter,
    class_accuracies,
    padded_names,
    read_class_report,
    write_class_report,
)
from jobs.common.confusion_plot import draw_confusion, write_confusion_png
from jobs.common.summary import classifier_summary, render

# Rows are the true class, columns the predicted one.
HAND_MADE = [
    [3, 1, 0],  # cats: 3 of 4 right, one taken for a dog
    [0, 2, 2],  # dogs: 2 of 4
    [0, 0, 0],  # zebras: none in the validation split
]


def test_the_counter_tallies_true_against_predicted_classes() -> None:
    counter = ConfusionCounter(3, torch.device("cpu"))
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    predicted = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    # Two batches, as evaluation sees them; the logits' argmax is the prediction.
    for part in (slice(0, 5), slice(5, 8)):
        counter.add(torch.nn.functional.one_hot(predicted[part], 3).float(), targets[part])
    assert counter.matrix() == HAND_MADE


def test_per_class_accuracy_of_a_hand_made_matrix() -> None:
    cats, dogs, zebras = class_accuracies(HAND_MADE, ["cats", "dogs", "zebras"])
    assert (cats.count, cats.correct, cats.predicted, cats.accuracy) == (4, 3, 3, 0.75)
    assert (dogs.count, dogs.correct, dogs.predicted, dogs.accuracy) == (4, 2, 3, 0.5)
    assert (zebras.count, zebras.predicted, zebras.accuracy) == (0, 2, None)
    with pytest.raises(ValueError, match="4 class names for a 3 x 3"):
        class_accuracies(HAND_MADE, ["cats", "dogs", "zebras", "birds"])


def test_per_class_files_are_written_and_read_back(tmp_path: Path) -> None:
    report = ClassReport(epoch=2, step=40, names=["cats", "dogs", "zebras"], matrix=HAND_MADE)
    write_class_report(tmp_path, report)
    assert (tmp_path / PER_CLASS_CSV).read_text() == (
        "class,count,correct,accuracy,predicted\n"
        "cats,4,3,0.750000,3\n"
        "dogs,4,2,0.500000,3\n"
        "zebras,0,0,,2\n"
    )
    data = json.loads((tmp_path / "per_class.json").read_text())
    assert data["confusion"] == HAND_MADE and data["epoch"] == 2
    assert [item["accuracy"] for item in data["per_class"]] == [0.75, 0.5, None]
    assert read_class_report(tmp_path) == report
    assert read_class_report(tmp_path / "elsewhere") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["per_class.csv", "per_class.json"]


def test_a_head_wider_than_the_data_names_its_spare_outputs() -> None:
    assert padded_names(["cats", "dogs"], 4) == ["cats", "dogs", "(output 2)", "(output 3)"]
    assert padded_names(["cats", "dogs"], 2) == ["cats", "dogs"]


def test_the_summary_lists_each_class_accuracy() -> None:
    report = ClassReport(3, 60, ["cats", "dogs", "zebras"], HAND_MADE)
    rows = [{"split": "val", "epoch": 3, "step": 60, "loss": 0.9, "accuracy": 0.625}]
    summary = classifier_summary(rows, workload="transfer", num_classes=3, per_class=report)
    assert summary["per_class_accuracy"] == {"cats": 0.75, "dogs": 0.5, "zebras": None}
    assert summary["per_class_count"] == {"cats": 4, "dogs": 4, "zebras": 0}
    text = render(summary)
    assert "per-class val accuracy (epoch 3):" in text
    assert "  cats     75.0% of 4" in text and "  dogs     50.0% of 4" in text
    assert "  zebras  no samples" in text


def test_a_summary_of_many_classes_lists_the_worst_ten() -> None:
    names = [f"class{index:02d}" for index in range(30)]
    matrix = [[0] * 30 for _ in range(30)]
    for index in range(30):
        matrix[index][index] = index  # class00 is never right, class29 right 29 times of 30
        matrix[index][(index + 1) % 30] = 30 - index
    summary = classifier_summary(
        [], workload="x", num_classes=30, per_class=ClassReport(1, 5, names, matrix)
    )
    lines = render(summary).splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("per-class"))
    assert "the 10 lowest of 30 (all in per_class.csv)" in lines[heading]
    listed = [line.split()[0] for line in lines[heading + 1 : heading + 11]]
    assert listed == names[:10]


# --- the picture -------------------------------------------------------------------------------


def dark(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    return int((np.asarray(image.convert("L").crop(box)) < 128).sum())


def test_the_confusion_picture_is_legible(tmp_path: Path) -> None:
    report = ClassReport(3, 60, ["cats", "dogs", "zebras"], HAND_MADE)
    picture = draw_confusion(report)
    image = picture.image
    assert image.width >= 300 and image.height >= 200
    left, top, right, bottom = picture.grid_box
    assert right - left == bottom - top == 3 * picture.cell
    # The diagonal cell of cats is darker than an empty cell (shaded by share of the row).
    cell = picture.cell
    cats_as_cats = image.getpixel((left + 3, top + 3))
    cats_as_zebras = image.getpixel((left + 2 * cell + 3, top + 3))
    assert sum(cats_as_cats) < sum(cats_as_zebras) == 3 * 255
    # Class names left of the rows and under the columns; titles on both axes.
    assert dark(image, (0, top, left - 2, bottom)) > 50
    assert dark(image, (left, bottom + 2, right, image.height)) > 50
    path = write_confusion_png(tmp_path, report)
    assert path.name == "confusion_matrix.png" and Image.open(path).size == image.size


def test_a_hundred_classes_still_make_a_picture(tmp_path: Path) -> None:
    matrix = [[1 if r == c else 0 for c in range(100)] for r in range(100)]
    report = ClassReport(1, 1, [f"c{i}" for i in range(100)], matrix)
    picture = draw_confusion(report)
    assert picture.cell >= 4 and picture.image.width < 1000
