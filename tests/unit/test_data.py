from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from framewatch.training.data import DataError, load_dataset


def _write_split(root: Path, split: str, rows: list[object], images: int = 0) -> None:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)).save(folder / f"{i}.png")
    (folder / "metadata.jsonl").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def _good(i: int, label: int | str = 0) -> dict[str, object]:
    return {"file_name": f"{i}.png", "text": f"caption {i}", "label": label}


def test_bad_rows_are_reported_with_split_and_line(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "broken.png").write_bytes(b"not a png")
    rows = [_good(0), _good(1, 1), {"file_name": "missing.png", "text": "x", "label": 0}, {"file_name": "1.png", "label": 1},
            {"file_name": "1.png", "text": "t", "label": 7}, "{not json", {"file_name": "broken.png", "text": "t", "label": 0},
            {"file_name": "../escape.png", "text": "t", "label": 0}]
    _write_split(tmp_path, "train", rows, images=2)
    _write_split(tmp_path, "test", [_good(0), _good(1, 1)], images=2)
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path, 8)
    text = str(info.value)
    for line, reason in ((3, "missing file missing.png"), (4, "missing text"), (5, "unknown label 7"), (6, "not valid JSON"),
                         (7, "unreadable image broken.png"), (8, "file_name '../escape.png' points outside")):
        assert f"train/metadata.jsonl line {line}: {reason}" in text


def test_a_few_bad_rows_are_tolerated_and_listed(tmp_path: Path) -> None:
    rows = [_good(i % 4, i % 2) for i in range(200)] + [{"file_name": "nope.png", "text": "x", "label": 0}]
    _write_split(tmp_path, "train", rows, images=4)
    _write_split(tmp_path, "test", [_good(0), _good(1, 1)], images=2)
    data = load_dataset(tmp_path, 8, max_bad_fraction=0.01)
    assert [str(b) for b in data.bad_rows] == ["train/metadata.jsonl line 201: missing file nope.png"]


def test_missing_val_is_carved_from_train_not_test(tmp_path: Path) -> None:
    _write_split(tmp_path, "train", [_good(i % 4, i % 2) for i in range(40)], images=4)
    _write_split(tmp_path, "test", [_good(0), _good(1, 1)], images=2)
    data = load_dataset(tmp_path, 8)
    assert data.val_carved and len(data["val"]) == 6 and len(data["train"]) == 34 and len(data["test"]) == 2
    again = load_dataset(tmp_path, 8)
    assert np.array_equal(again["val"].images, data["val"].images)  # fixed seed


def test_label_names_from_dataset_json_and_rgb(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": ["calm", "violent"]}))
    folder = tmp_path / "train"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(folder / "gray.png")
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "gray.png", "text": "t", "label": "violent"}) + "\n")
    data = load_dataset(tmp_path, 8, splits=("train",))
    assert data.labels == ["calm", "violent"] and data.violent_index == 1
    assert data["train"].images.shape == (1, 8, 8, 3) and data["train"].labels.tolist() == [1]


def test_threshold_ignores_a_diverged_models_nan_scores() -> None:
    import numpy as np

    from framewatch.training.metrics import best_f1_threshold

    assert best_f1_threshold(np.array([0, 1, 1]), np.array([np.nan, np.nan, np.nan])) == 0.5
    assert best_f1_threshold(np.array([0, 1, 1]), np.array([0.1, np.nan, 0.9])) in (0.1, 0.9)
