"""A tiny end-to-end run of every mode: train → evaluate → report → export, on a generated set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from framewatch.engines.manifest import ManifestError
from framewatch.training.config import TrainConfig
from framewatch.training.export import PARITY_TOLERANCE, export_run
from framewatch.training.preprocess import Preprocess
from framewatch.training.report import write_report
from framewatch.training.runs import load_image_classifier
from framewatch.training.synth import write_dataset
from framewatch.training.train import train
from tests.training_fixtures import calibrate_batchnorm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.training_fixtures import make_tiny_text_encoder

    root = tmp_path_factory.mktemp("e2e")
    write_dataset(root / "data", {"train": 32, "val": 0, "test": 12}, seed=5, image_size=32, progress=False)
    return {"root": root, "data": root / "data", "text": make_tiny_text_encoder(root / "bert")}


def _cfg(tiny: dict[str, Path], name: str, **kw: object) -> TrainConfig:
    return TrainConfig(data=tiny["data"], out=tiny["root"] / name, image_encoder="mobileone_s0", pretrained=False, image_size=32, epochs=1,
                       batch_size=16, text_encoder=str(tiny["text"]), text_max_length=16, fusion_dim=16, progress=False, **kw)  # type: ignore[arg-type]


@pytest.mark.slow  # ~110 s: every mode trained, evaluated, reported; `make test-slow`
def test_every_mode_trains_evaluates_and_reports(tiny: dict[str, Path]) -> None:
    runs = {
        "baseline": _cfg(tiny, "baseline", mode="baseline"),
        "guidance": _cfg(tiny, "guidance", mode="guidance", adapt_epochs=1),
        "guidance-trained": _cfg(tiny, "guidance-trained", mode="guidance", freeze_text=False, fusion="official", adapt_epochs=1),
        "teacher": _cfg(tiny, "teacher", mode="teacher"),
    }
    for cfg in runs.values():
        summary = train(cfg)
        for split in ("val", "test"):
            metrics = summary["splits"][split]
            assert set(metrics) >= {"precision", "recall", "accuracy", "f1", "roc_auc", "confusion_matrix", "threshold"}
            assert sum(map(sum, metrics["confusion_matrix"])) == metrics["n"]
        for name in ("config.json", "metrics.json", "model.pt", "curves.png", "roc_pr.png", "checkpoints/last.pt"):
            assert (cfg.out / name).exists(), name
    metrics = json.loads((runs["guidance"].out / "metrics.json").read_text())
    assert metrics["data"]["val_carved"] and {h["stage"] for h in metrics["history"]} == {"fused", "adapt-head", "adapt"}
    assert metrics["teacher"]["splits"]["test"]["n"] == 12
    distill = _cfg(tiny, "distill", mode="distill", teacher=runs["guidance"].out)
    train(distill)
    md, js = write_report([c.out for c in runs.values()] + [distill.out], tiny["root"] / "report.md")
    report = json.loads(js.read_text())
    variants = [row["variant"] for row in report["rows"]]
    assert variants == ["baseline", "guidance (text frozen)", "guidance (text trained)", "distill",
                        "teacher (text frozen)", "teacher (text trained)", "colour statistics (trivial)"]
    assert report["rows"][4]["seeds"] == [0], "the teacher run and the guidance run's first stage are one model"
    trivial = report["rows"][-1]
    assert 0.0 <= trivial["roc_auc"]["mean"] <= 1.0 and "colour statistics (trivial)" in md.read_text()
    baseline_row = report["rows"][0]
    assert baseline_row["latency"]["batch1_ms_per_image"] > 0 and baseline_row["latency"]["batch32_ms_per_image"] > 0
    assert "| baseline | all | 0 |" in md.read_text() and (tiny["root"] / "report.png").exists()
    # The adapt stage's deployed model is the baseline's architecture and size.
    deployed, _ = load_image_classifier(runs["guidance"].out)
    baseline, _ = load_image_classifier(runs["baseline"].out)
    assert sum(p.numel() for p in deployed.parameters()) == sum(p.numel() for p in baseline.parameters())


@pytest.mark.slow  # 23 s; `make test-slow`
def test_resume_continues_from_the_checkpoint(tiny: dict[str, Path]) -> None:
    first = _cfg(tiny, "resume", mode="baseline")
    train(first)
    more = _cfg(tiny, "resume", mode="baseline", resume=True)
    more.epochs = 2
    summary = train(more)
    assert [h["epoch"] for h in summary["history"]] == [1, 2]


def test_cpu_training_is_deterministic(tiny: dict[str, Path]) -> None:
    a = train(_cfg(tiny, "det-a", mode="baseline"))
    b = train(_cfg(tiny, "det-b", mode="baseline"))
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]


def test_export_folds_preprocessing_and_matches_pytorch(tiny: dict[str, Path]) -> None:
    run = tiny["root"] / "export-run"
    train(_cfg(tiny, "export-run", mode="baseline"))
    calibrate_batchnorm(run, tiny["data"], 32)
    artifact = tiny["root"] / "artifact"
    report = export_run(run, artifact, fp16=True)
    assert report["max_abs_diff"] <= PARITY_TOLERANCE and report["parity_images"] > 0
    graph = onnx.load(str(artifact / "model.onnx"))
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    fp16 = onnx.load(str(artifact / "model.fp16.onnx"))
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert fp16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    model, payload = load_image_classifier(run)
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    from framewatch.training.data import load_dataset

    frames = load_dataset(tiny["data"], 32, splits=("train",))["train"].images
    for batch in (1, 7, 32, 64):  # the batch axis is dynamic
        pixels = np.concatenate([frames, frames])[:batch]
        onnx_probs = session.run(["probabilities"], {"pixels": pixels})[0]
        with torch.no_grad():
            torch_probs = model(Preprocess(payload["mean"], payload["std"])(torch.from_numpy(pixels))).softmax(-1).numpy()
        assert onnx_probs.shape == (batch, 2)
        assert np.abs(onnx_probs - torch_probs).max() <= PARITY_TOLERANCE
    assert np.ptp(onnx_probs[:, 1]) > 0, "a constant model proves nothing about parity"
    manifest = json.loads((artifact / "model.json").read_text())
    assert manifest["input_height"] == 32 and manifest["labels"] == ["non-violent", "violent"] and manifest["training"]["mode"] == "baseline"
    # The artifact is self-contained and honest: reference frames with what PyTorch gave them, and the
    # resize training did (not the encoder's pretraining config).
    assert manifest["preprocessing"]["resize"] == "bilinear" and manifest["reference"]["count"] >= 2
    shutil.copytree(artifact, tiny["root"] / "moved-artifact")
    from framewatch.engines.check import check_engine, reference_frames
    from framewatch.engines.manifest import load_manifest

    moved = tiny["root"] / "moved-artifact"
    frames, expected = reference_frames(moved, load_manifest(moved))
    with torch.no_grad():
        again = model(Preprocess(payload["mean"], payload["std"])(torch.from_numpy(frames))).softmax(-1).numpy()
    assert np.abs(again - expected).max() <= PARITY_TOLERANCE, "the stored probabilities are the trained model's (batch-size numerics apart)"
    checked = check_engine(moved, "onnxruntime", batch_sizes=(1, 4), repeats=2)
    assert checked["max_abs_diff_vs_reference"] <= PARITY_TOLERANCE and checked["agreement_at_threshold"] == 1.0
    # A changed reference file is caught like a changed graph (by the check; the worker never reads it).
    np.savez_compressed(moved / "reference.npz", frames=frames, probabilities=expected[::-1])
    load_manifest(moved)
    with pytest.raises(ManifestError, match="modified after export"):
        reference_frames(moved, load_manifest(moved))


def test_train_config_recipe_flags_win_and_errors_name_fields(tmp_path: Path) -> None:
    from framewatch.training.config import TrainConfigError, resolve

    (tmp_path / "r.yaml").write_text("image_encoder: mobileone_s0\nepochs: 3\nlr: 0.001\n")
    cfg = resolve(tmp_path / "r.yaml", data=tmp_path, out=tmp_path / "run", epochs=5, lr=None)
    assert cfg.image_encoder == "mobileone_s0" and cfg.epochs == 5 and cfg.lr == 0.001
    assert resolve("paper", data=tmp_path, out=tmp_path).image_size == 224  # a shipped recipe by name
    (tmp_path / "bad.yaml").write_text("epochs: 0\nimage_encodr: x\n")
    with pytest.raises(TrainConfigError) as info:
        resolve(tmp_path / "bad.yaml", data=tmp_path, out=tmp_path, text_max_length=20)
    message = str(info.value)
    assert "epochs = 0 (recipe" in message and "image_encodr" in message
    with pytest.raises(TrainConfigError, match="text_max_length 20 is not a square number"):  # a rule across fields
        resolve(None, data=tmp_path, out=tmp_path, text_max_length=20)
