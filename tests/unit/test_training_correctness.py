"""Training and evaluation defects that bend reported numbers or ship the wrong class, one test each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from framewatch.training.clip_zeroshot import PAPER_PROMPT_CALM, PAPER_PROMPT_VIOLENT, prompts_for
from framewatch.training.data import DataError, load_dataset, positive_index
from framewatch.training.metrics import binary_metrics, choose_threshold
from framewatch.training.report import ReportError, collect


def test_random_scores_are_not_called_violent_everywhere() -> None:
    rng = np.random.default_rng(3)
    for positive_rate in (0.48, 0.3):
        labels = (rng.random(3000) < positive_rate).astype(np.int64)
        scores = rng.random(3000)
        point = choose_threshold(labels, scores)  # the default rule: at most 5 % false alarms on val
        m = binary_metrics(labels, scores, point.threshold)
        assert point.rule == "fpr" and float(m["false_positive_rate"]) <= 0.05 + 1e-9  # type: ignore[arg-type]
        assert float(m["accuracy"]) >= float(m["majority_accuracy"]) - 0.05  # type: ignore[arg-type]
        f1_point = choose_threshold(labels, scores, rule="f1")
        assert f1_point.warnings, "the F1 maximum on a useless model must warn"
        assert "majority_accuracy" in m


def test_a_validation_split_without_positives_warns_and_falls_back() -> None:
    point = choose_threshold(np.zeros(20, np.int64), np.linspace(0, 1, 20))
    assert point.threshold == 0.5 and any("0 positive" in w for w in point.warnings)


def test_a_good_model_meets_its_target_without_warnings() -> None:
    labels = np.r_[np.zeros(100), np.ones(100)].astype(np.int64)
    scores = np.r_[np.linspace(0.0, 0.6, 100), np.linspace(0.4, 1.0, 100)]
    point = choose_threshold(labels, scores, rule="precision", target=0.95)
    assert point.val_precision >= 0.95 and point.warnings == ()


def test_distillation_targets_are_at_the_students_temperature() -> None:
    from framewatch.training.train import distill_loss

    teacher_logits = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    teacher_probs = teacher_logits.softmax(-1)
    student = torch.zeros(2, 2, requires_grad=True)
    optimizer = torch.optim.SGD([student], lr=5.0)
    loss_fn = distill_loss(alpha=0.0, temperature=4.0)  # the soft term alone
    batch = {"labels": torch.tensor([1, 0]), "teacher_probs": teacher_probs}
    for _ in range(3000):
        optimizer.zero_grad()
        loss_fn(student, batch).backward()
        optimizer.step()
    gaps = (student[:, 1] - student[:, 0]).detach()
    teacher_gaps = teacher_logits[:, 1] - teacher_logits[:, 0]
    torch.testing.assert_close(gaps, teacher_gaps, atol=0.05, rtol=0.02)  # the teacher's gaps, not T times them
    torch.testing.assert_close(F.softmax(student.detach(), -1), teacher_probs, atol=0.01, rtol=0.0)


def _write_run(root: Path, name: str, variant: str, seed: int, mode: str, teacher: bool = False, **config: object) -> Path:
    run = root / name
    run.mkdir(parents=True)
    split = {"test": {"precision": 0.5, "recall": 0.5, "accuracy": 0.6, "majority_accuracy": 0.5, "f1": 0.5, "roc_auc": 0.7}}
    metrics: dict[str, object] = {"variant": variant, "mode": mode, "deployed_inputs": "image", "splits": split}
    if teacher:
        metrics["teacher"] = {"threshold": 0.5, "splits": split}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.json").write_text(json.dumps({"seed": seed, "mode": mode, "image_encoder": "mobileone_s0", "image_size": 64,
                                                 "data": str(root / "data"), **config}))
    return run


def test_a_report_row_holds_each_model_once(tmp_path: Path) -> None:
    guidance = _write_run(tmp_path, "g0", "guidance (text frozen)", 0, "guidance", teacher=True)
    teacher = _write_run(tmp_path, "t0", "teacher (text frozen)", 0, "teacher")
    guidance1 = _write_run(tmp_path, "g1", "guidance (text frozen)", 1, "guidance", teacher=True)
    rows = {row["variant"]: row for row in collect([guidance, teacher, guidance1, guidance], measure=False)["rows"]}
    assert sorted(rows["teacher (text frozen)"]["seeds"]) == [0, 1], "seed 0's teacher is one model, counted once"
    assert rows["guidance (text frozen)"]["seeds"] == [0, 1]


def test_a_report_refuses_to_average_unlike_runs(tmp_path: Path) -> None:
    small = _write_run(tmp_path, "b0", "baseline", 0, "baseline")
    large = _write_run(tmp_path, "b1", "baseline", 1, "baseline", image_size=128)
    with pytest.raises(ReportError, match="image_size"):
        collect([small, large], measure=False)
    twice = _write_run(tmp_path, "b0-again", "baseline", 0, "baseline")
    with pytest.raises(ReportError, match="seed"):
        collect([small, twice], measure=False)


def test_the_positive_class_is_stated_or_unambiguous() -> None:
    assert positive_index(["Violence", "NonViolence"]) == 0
    assert positive_index(["non-violent", "violent"]) == 1
    assert positive_index(["calm", "fight"], stated="fight") == 1
    with pytest.raises(DataError, match="calm"):
        positive_index(["calm", "fight"])
    with pytest.raises(DataError):
        positive_index(["violent", "Violence"])
    with pytest.raises(DataError):
        positive_index(["calm", "fight"], stated="brawl")


def _imagefolder(root: Path, splits: dict[str, list[str]], labels: list[str] | None = None) -> None:
    from PIL import Image

    if labels is not None:
        (root / "dataset.json").parent.mkdir(parents=True, exist_ok=True)
        (root / "dataset.json").write_text(json.dumps({"labels": labels}))
    for split, rows in splits.items():
        folder = root / split
        folder.mkdir(parents=True)
        lines = []
        for i, label in enumerate(rows):
            Image.new("RGB", (8, 8), (i * 10 % 255, 0, 0)).save(folder / f"{i}.png")
            lines.append(json.dumps({"file_name": f"{i}.png", "text": "", "label": label}))
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def test_named_labels_pick_the_right_class_and_a_one_class_val_is_refused(tmp_path: Path) -> None:
    _imagefolder(tmp_path / "ok", {"train": ["Violence", "NonViolence"] * 3, "val": ["Violence", "NonViolence"],
                                   "test": ["NonViolence", "Violence"]}, labels=["Violence", "NonViolence"])
    data = load_dataset(tmp_path / "ok", 8)
    assert data.labels[data.violent_index] == "Violence"
    _imagefolder(tmp_path / "one", {"train": ["violent", "non-violent"] * 3, "val": ["non-violent"] * 3,
                                    "test": ["violent", "non-violent"]})
    with pytest.raises(DataError, match="both classes"):
        load_dataset(tmp_path / "one", 8)


def test_clip_prompts_follow_the_class_names() -> None:
    assert prompts_for(["violent", "non-violent"], 0) == [PAPER_PROMPT_VIOLENT, PAPER_PROMPT_CALM]
    assert prompts_for(["non-violent", "violent"], 1) == [PAPER_PROMPT_CALM, PAPER_PROMPT_VIOLENT]
    assert prompts_for(["a", "b"], 1, {"b": "x", "a": "y"}) == ["y", "x"]
    with pytest.raises(ValueError, match="no prompt"):
        prompts_for(["a", "b"], 1, {"a": "y"})


def test_two_variants_at_one_seed_see_the_same_batches(tmp_path: Path) -> None:
    from rich.progress import Progress

    from framewatch.training.config import TrainConfig
    from framewatch.training.data import SplitData
    from framewatch.training.distributed import Placement
    from framewatch.training.train import SplitTensors, run_stage

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (20, 4, 4, 3), dtype=np.uint8)
    labels = np.arange(20) % 2
    data = SplitData("train", pixels, [""] * 20, labels, [str(i) for i in range(20)])
    split = SplitTensors(data, torch.from_numpy(pixels), torch.from_numpy(labels))
    cfg = TrainConfig(data=tmp_path, out=tmp_path, batch_size=4, patience=10, seed=7, progress=False)
    seen: dict[str, list[tuple[int, ...]]] = {}

    for stage in ("image", "fused"):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2))
        order: list[tuple[int, ...]] = []

        def loss(logits: torch.Tensor, batch: dict[str, torch.Tensor], order: list[tuple[int, ...]] = order) -> torch.Tensor:
            order.append(tuple(batch["pixels"].flatten(1)[:, 0].tolist()))  # which frames, flipped or not
            return F.cross_entropy(logits, batch["labels"])

        def forward(batch: dict[str, torch.Tensor], train: bool, model: torch.nn.Module = model) -> torch.Tensor:
            out: torch.Tensor = model(batch["pixels"].float())
            return out

        with Progress(disable=True) as progress:
            run_stage(stage, model, forward, loss, split, split, cfg, 2, Placement(torch.device("cpu")), 1, tmp_path / f"{stage}.pt", progress)
        seen[stage] = order
    assert seen["image"] == seen["fused"] and len(seen["image"]) == 10
