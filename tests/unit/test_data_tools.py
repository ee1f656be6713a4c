"""Training data as users have it: real file varieties, streamed loading, checks, manifests, and
frames cut from video by the worker's decoder (issue 16). Every image here is a real file."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from PIL import Image

from framewatch.training.config import TrainConfig
from framewatch.training.data import DataError, load_dataset, load_image
from framewatch.training.datacheck import check_dataset
from framewatch.training.loader import LoaderPlan, SplitLoader, augment_frame, batch_indices, frame_rng

LABELS = ("non-violent", "violent")


def _scene(seed: int, size: int = 40, violent: bool = False) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    if violent:
        pixels[size // 4 : size // 2, size // 4 : size // 2] = (220, 20, 20)
    return Image.fromarray(pixels)


def _write(folder: Path, split: str, rows: list[dict[str, Any]]) -> None:
    (folder / split).mkdir(parents=True, exist_ok=True)
    (folder / split / "metadata.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _plain_set(root: Path, per_split: dict[str, int], size: int = 40) -> Path:
    for split, count in per_split.items():
        rows = []
        for i in range(count):
            name = f"{split}-{i}.png"
            (root / split).mkdir(parents=True, exist_ok=True)
            _scene(zlib.crc32(f"{split}-{i}".encode()), size, violent=i % 2 == 1).save(root / split / name)
            rows.append({"file_name": name, "text": f"stream {i} {'fight' if i % 2 else 'chat'}", "label": i % 2})
        _write(root, split, rows)
    return root


# --- 5. real file varieties and empty captions ---------------------------------------------

def _varieties(root: Path) -> list[dict[str, Any]]:
    folder = root / "train"
    folder.mkdir(parents=True)
    base = _scene(1, 48)
    base.convert("L").save(folder / "grey.jpg", quality=90)
    base.convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    base.save(folder / "progressive.jpg", quality=85, progressive=True)
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    base.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    base.save(folder / "frame.webp", quality=80)
    base.save(folder / "UPPER.PNG")
    base.save(folder / "UPPER2.JPG", format="JPEG")
    names = ["grey.jpg", "cmyk.jpg", "progressive.jpg", "alpha.png", "palette.png", "frame.webp", "UPPER.PNG", "UPPER2.JPG"]
    texts = ["", "🔥🔥 fight night 🥊", "x" * 2000, "", "calm stream", "", "news", "title"]
    return [{"file_name": n, "text": t, "label": i % 2} for i, (n, t) in enumerate(zip(names, texts, strict=True))]


def test_real_file_varieties_and_empty_captions_load_in_every_mode(tmp_path: Path) -> None:
    rows = _varieties(tmp_path)
    _write(tmp_path, "train", rows)
    data = load_dataset(tmp_path, 32, splits=("train",), max_bad_fraction=0.0)
    assert len(data["train"]) == 8 and data["train"].images.shape == (8, 32, 32, 3) and not data.bad_rows
    # A row without any text: image-only modes never read it, text modes count it as bad.
    _write(tmp_path, "train", [*rows, {"file_name": "grey.jpg", "label": 0}])
    assert len(load_dataset(tmp_path, 32, splits=("train",), max_bad_fraction=0.0, needs_text=False)["train"]) == 9
    with pytest.raises(DataError, match=r"missing text for grey\.jpg"):
        load_dataset(tmp_path, 32, splits=("train",), max_bad_fraction=0.0, needs_text=True)


def test_not_an_image_is_a_bad_row_before_training(tmp_path: Path) -> None:
    _plain_set(tmp_path, {"train": 10})
    (tmp_path / "train" / "train-3.png").write_text("this is not a PNG")
    data = load_dataset(tmp_path, 32, splits=("train",), max_bad_fraction=0.5)
    assert len(data["train"]) == 9 and "unreadable image train-3.png" in str(data.bad_rows[0])


# --- 3. data check ---------------------------------------------------------------------------

def test_data_check_names_unreadable_files_leaks_and_long_captions(tmp_path: Path) -> None:
    root = _plain_set(tmp_path / "data", {"train": 12, "val": 6, "test": 6})
    payload = (root / "train" / "train-0.png").read_bytes()
    (root / "test" / "leak.png").write_bytes(payload)  # the very file
    near = Image.open(root / "train" / "train-2.png").convert("RGB")
    near.resize((60, 60), Image.Resampling.BICUBIC).save(root / "val" / "near.jpg", quality=92)  # re-encoded, resized
    jpeg = io.BytesIO()
    _scene(5).save(jpeg, format="JPEG")
    (root / "train" / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])  # truncated: its header reads fine
    long_caption = "a very long stream title " * 20
    for split, extra in (("test", {"file_name": "leak.png", "text": "", "label": 0}), ("val", {"file_name": "near.jpg", "text": long_caption, "label": 0}),
                         ("train", {"file_name": "cut.jpg", "text": "x", "label": 1})):
        with (root / split / "metadata.jsonl").open("a") as handle:
            handle.write(json.dumps(extra) + "\n")
    report = check_dataset(root, text_encoder="minilm", max_length=25, image_size=32)
    assert report["splits"]["train"]["unreadable"] == ["cut.jpg (OSError)"]
    assert report["leakage"]["exact"] == [{"train": ["train-0.png"], "test": ["leak.png"]}]
    assert any(pair.get("train") == "train-2.png" and pair.get("val") == "near.jpg" for pair in report["leakage"]["near"])
    assert report["captions"]["truncated"] == 1 and report["captions"]["empty"] == 1
    assert report["splits"]["test"]["classes"] == {"non-violent": 4, "violent": 3}
    assert len(report["problems"]) == 3
    done = subprocess.run([sys.executable, "-m", "framewatch.cli", "data", "check", str(root), "--quiet", "--image-size", "32"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "leak.png" in done.stdout and json.loads((root / "data_check.json").read_text())["problems"]


def test_train_refuses_a_leaking_split_and_names_the_files(tmp_path: Path) -> None:
    from framewatch.training.distributed import Placement
    from framewatch.training.train import prepare

    root = _plain_set(tmp_path / "data", {"train": 8, "val": 4, "test": 4})
    (root / "test" / "copy.png").write_bytes((root / "train" / "train-1.png").read_bytes())
    with (root / "test" / "metadata.jsonl").open("a") as handle:
        handle.write(json.dumps({"file_name": "copy.png", "text": "", "label": 1}) + "\n")
    cfg = TrainConfig(data=root, out=tmp_path / "run", mode="baseline", image_encoder="mobileone_s0", pretrained=False, image_size=32, progress=False)
    with pytest.raises(DataError, match=r"train: train-1\.png; test: copy\.png") as raised:
        prepare(cfg, Placement(torch.device("cpu")), needs_text=False)
    assert "--allow-leakage" in str(raised.value)
    prepared = prepare(cfg.model_copy(update={"allow_leakage": True}), Placement(torch.device("cpu")), needs_text=False)
    assert len(prepared.splits["test"]) == 5


# --- 1. and 2. streamed loading and augmentation --------------------------------------------

def test_streamed_and_in_memory_batches_are_the_same_pixels(tmp_path: Path) -> None:
    root = _plain_set(tmp_path, {"train": 21})
    split = load_dataset(root, 32, splits=("train",))["train"]
    streamed = SplitLoader(split, LoaderPlan("streamed", 2, 0, "test"))
    memory = SplitLoader(split, LoaderPlan("memory", 1, 0, "test"))
    order = batch_indices(len(split), 4, True, torch.Generator().manual_seed(3))
    for seed in (None, (7, 2)):
        a = list(streamed(order, seed))
        b = list(memory(order, seed))
        assert len(a) == len(b) == 5  # 21 rows, batches of 4, the last single row dropped
        for (rows_a, pix_a), (rows_b, pix_b) in zip(a, b, strict=True):
            assert torch.equal(rows_a, rows_b) and torch.equal(pix_a, pix_b)
    augmented = next(iter(streamed(order, (7, 2))))[1]
    plain = next(iter(streamed(order)))[1]
    assert not torch.equal(augmented, plain)  # stream augmentation changed the frames
    streamed.close()


def test_stream_augmentation_is_reproducible_and_keeps_the_size() -> None:
    frame = np.asarray(_scene(3, 64))
    a = augment_frame(frame, frame_rng(1, 2, 3))
    b = augment_frame(frame, frame_rng(1, 2, 3))
    c = augment_frame(frame, frame_rng(1, 3, 3))
    assert a.shape == frame.shape and a.dtype == np.uint8 and np.array_equal(a, b) and not np.array_equal(a, c)


def _tiny_train(root: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    from framewatch.training.train import train

    options: dict[str, Any] = {"mode": "baseline", "image_encoder": "mobileone_s0", "pretrained": False, "image_size": 32, "epochs": 2,
                               "batch_size": 8, "progress": False, **overrides}
    cfg = TrainConfig(data=root, out=out, **options)
    return train(cfg)


@pytest.mark.parametrize("augment", ["flip", pytest.param("stream", marks=pytest.mark.slow)])  # stream: ~32 s, `make test-slow`
def test_a_streamed_run_and_an_in_memory_run_reach_the_same_metrics(tmp_path: Path, augment: str) -> None:
    root = _plain_set(tmp_path / "data", {"train": 24, "val": 8, "test": 8})
    streamed = _tiny_train(root, tmp_path / "s", loader="streamed", loader_workers=1, augment=augment)
    memory = _tiny_train(root, tmp_path / "m", loader="memory", augment=augment)
    assert streamed["data"]["loader"]["mode"] == "streamed" and memory["data"]["loader"]["mode"] == "memory"
    for a, b in zip(streamed["history"], memory["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, abs=1e-6)
    assert streamed["splits"]["test"]["roc_auc"] == pytest.approx(memory["splits"]["test"]["roc_auc"], abs=1e-6)


def test_auto_loader_keeps_small_sets_in_memory_and_streams_large_ones(tmp_path: Path) -> None:
    from framewatch.training.loader import plan_loader

    split = load_dataset(_plain_set(tmp_path, {"train": 4}), 224, splits=("train",))["train"]
    assert plan_loader([split], "auto", cache_mb=1, workers=None).mode == "memory"  # 4 × 150 KB
    assert plan_loader([split], "auto", cache_mb=0, workers=None).mode == "streamed"


def test_text_is_cached_next_to_the_data_and_read_back(tmp_path: Path) -> None:
    from framewatch.training.distributed import Placement
    from framewatch.training.train import prepare
    from tests.training_fixtures import make_tiny_text_encoder

    root = _plain_set(tmp_path / "data", {"train": 8, "val": 4, "test": 4})
    text = make_tiny_text_encoder(tmp_path / "bert")
    cfg = TrainConfig(data=root, out=tmp_path / "run", image_encoder="mobileone_s0", pretrained=False, image_size=32,
                      text_encoder=str(text), text_max_length=16, progress=False)
    first = prepare(cfg, Placement(torch.device("cpu")), needs_text=True)
    second = prepare(cfg, Placement(torch.device("cpu")), needs_text=True)
    assert all(s.startswith("written") for s in first.text_cache.values()) and all(s.startswith("hit") for s in second.text_cache.values())
    a, b = first.splits["train"].text_features, second.splits["train"].text_features
    assert a is not None and b is not None and torch.equal(a, b)
    assert [p.name for p in (root / ".framewatch-cache" / "text").glob("train-*/features.npy")] == ["features.npy"]
    changed = prepare(cfg.model_copy(update={"text_max_length": 9}), Placement(torch.device("cpu")), needs_text=True)
    assert all(s.startswith("written") for s in changed.text_cache.values())  # another max_length misses
    weights = next(text.glob("*.safetensors"), None) or next(text.glob("*.bin"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # the encoder retrained in place
    retrained = prepare(cfg, Placement(torch.device("cpu")), needs_text=True)
    assert all(s.startswith("written") for s in retrained.text_cache.values())
    for prepared in (first, second, changed, retrained):
        prepared.close()


# --- 6. the JSONL manifest -----------------------------------------------------------------

def test_a_jsonl_manifest_of_paths_trains(tmp_path: Path) -> None:
    images = _plain_set(tmp_path / "pool", {"train": 16, "val": 6, "test": 6})
    lines = []
    for split in ("train", "val", "test"):
        for row in map(json.loads, (images / split / "metadata.jsonl").read_text().splitlines()):
            path = images / split / row["file_name"]
            shown = str(path) if split == "test" else str(path.relative_to(tmp_path))  # absolute and relative paths
            lines.append({"path": shown, "label": LABELS[row["label"]], "text": row["text"], "split": split})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    data = load_dataset(manifest, 32)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 16, "val": 6, "test": 6}
    summary = _tiny_train(manifest, tmp_path / "run", epochs=1)
    assert summary["data"]["sizes"]["train"] == 16


# --- 4. frames from video, as the worker sees them -----------------------------------------

def _video(path: Path, seconds: int, fps: int = 10, size: tuple[int, int] = (96, 64), seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"g": str(fps)}  # a keyframe a second
        for i in range(seconds * fps):
            frame = np.full((size[1], size[0], 3), (i * 7) % 256, dtype=np.uint8)
            frame[:, : size[0] // 2] = rng.integers(0, 255, 3)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_frames_from_videos_are_the_worker_s_pixels_and_train(tmp_path: Path) -> None:
    from framewatch.config import DecodeSettings
    from framewatch.training.fromvideo import frames_from_videos
    from framewatch.worker.decode import decode_request, decode_segment

    videos = tmp_path / "videos"
    videos.mkdir()
    rows = []
    for i, (split, label) in enumerate([("train", 0), ("train", 1), ("train", 0), ("train", 1), ("val", 0), ("val", 1), ("test", 0), ("test", 1)]):
        _video(videos / f"clip{i}.mp4", seconds=4, seed=i)
        rows.append({"path": f"videos/clip{i}.mp4", "label": LABELS[label], "text": f"clip {i} {'fight' if label else 'talk'}", "split": split})
    rows[0]["start_s"], rows[0]["end_s"] = 1, 3  # two sampled seconds of the first clip
    manifest = tmp_path / "videos.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = frames_from_videos(manifest, tmp_path / "data", image_size=32, progress=False)
    assert summary["frames"] == {"train": 2 + 3 * 4, "val": 8, "test": 8} and not summary["failed"]
    meta = [json.loads(line) for line in (tmp_path / "data" / "train" / "metadata.jsonl").read_text().splitlines()]
    first = [m for m in meta if m["source"].endswith("clip0.mp4")]
    assert [m["pts_ms"] for m in first] == [1000, 2000] and {m["label"] for m in first} == {"non-violent"} and first[0]["text"] == "clip 0 talk"
    # The worker decoding the same bytes gives the same model input, bit for bit.
    engine = type("Model", (), {"input_size": (32, 32), "interpolation": "bilinear"})()
    served = decode_segment(decode_request(DecodeSettings(), engine, (videos / "clip1.mp4").read_bytes(), "video/mp4", None, None))  # type: ignore[arg-type]
    written = {m["pts_ms"]: m["file_name"] for m in meta if m["source"].endswith("clip1.mp4")}
    assert sorted(written) == [f.pts_ms for f in served.frames] == [0, 1000, 2000, 3000]
    for frame in served.frames:
        training_input = load_image(tmp_path / "data" / "train" / written[frame.pts_ms], 32)
        assert int(np.abs(training_input.astype(int) - frame.pixels.astype(int)).max()) == 0
    summary_run = _tiny_train(tmp_path / "data", tmp_path / "run", epochs=1)
    assert summary_run["data"]["sizes"] == {"train": 14, "val": 8, "test": 8}


def test_a_bad_manifest_row_is_named(tmp_path: Path) -> None:
    from framewatch.training.fromvideo import frames_from_videos

    manifest = tmp_path / "videos.csv"
    manifest.write_text("path,label,text\nclip.mp4,maybe,hello\n")
    with pytest.raises(DataError, match=r"videos\.csv line 2: unknown label 'maybe'"):
        frames_from_videos(manifest, tmp_path / "out", 32, progress=False)


def test_a_bad_manifest_line_is_one_bad_row(tmp_path: Path) -> None:
    images = _plain_set(tmp_path / "pool", {"train": 30, "val": 6, "test": 6})
    lines = [json.dumps({"path": str(images / split / row["file_name"]), "label": row["label"], "text": "", "split": split})
             for split in ("train", "val", "test") for row in map(json.loads, (images / split / "metadata.jsonl").read_text().splitlines())]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join([*lines, "{not json"]) + "\n")
    data = load_dataset(manifest, 32, max_bad_fraction=0.05)
    assert [str(b) for b in data.bad_rows] == ["m.jsonl line 43: not valid JSON (Expecting property name enclosed in double quotes)"]


def test_a_truncated_image_is_dropped_and_counted_not_a_crash(tmp_path: Path) -> None:
    root = _plain_set(tmp_path, {"train": 40})
    jpeg = io.BytesIO()
    _scene(9, size=128).save(jpeg, format="JPEG", quality=95)
    (root / "train" / "train-5.png").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])  # its header reads, its body does not
    split = load_dataset(root, 32, splits=("train",))["train"]
    order = batch_indices(len(split), 8, False)
    for plan in (LoaderPlan("streamed", 1, 0, "test"), LoaderPlan("memory", 1, 0, "test")):
        loader = SplitLoader(split, plan, max_bad_fraction=0.05)
        rows = torch.cat([r for r, _ in loader(order)]).tolist()
        assert 5 not in rows and len(rows) == 39 and list(loader.failed) == [5]
        loader.close()
    strict = SplitLoader(split, LoaderPlan("streamed", 1, 0, "test"), max_bad_fraction=0.0)
    with pytest.raises(DataError, match=r"train-5\.png"):
        list(strict(order))
    strict.close()


def test_blank_frames_and_a_carved_val_are_not_leakage(tmp_path: Path) -> None:
    from framewatch.training.leakage import refuse_leakage

    root = _plain_set(tmp_path / "data", {"train": 12, "test": 4})
    for split in ("train", "test"):
        Image.new("RGB", (40, 40), "black").save(root / split / "fade.png")
        with (root / split / "metadata.jsonl").open("a") as handle:
            handle.write(json.dumps({"file_name": "fade.png", "text": "", "label": 0}) + "\n")
    (root / "train" / "twice.png").write_bytes((root / "train" / "train-1.png").read_bytes())  # the same image twice inside train
    with (root / "train" / "metadata.jsonl").open("a") as handle:
        handle.write(json.dumps({"file_name": "twice.png", "text": "", "label": 1}) + "\n")
    dataset = load_dataset(root, 32)
    assert dataset.val_carved
    refuse_leakage(dataset)  # neither the shared black frame nor train's own duplicate (wherever carving put it) is leakage


def test_from_videos_refuses_a_folder_with_an_old_data_set_and_reads_a_spreadsheet_csv(tmp_path: Path) -> None:
    from framewatch.training.fromvideo import frames_from_videos

    _video(tmp_path / "a.mp4", seconds=2)
    manifest = tmp_path / "videos.csv"
    manifest.write_text("\ufeffpath,label,text,split\na.mp4,violent,fight,train\n", encoding="utf-8")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metadata.jsonl").write_text("{}")
    with pytest.raises(DataError, match="not empty"):
        frames_from_videos(manifest, tmp_path / "old", 32, progress=False)
    summary = frames_from_videos(manifest, tmp_path / "new", 32, progress=False)
    assert summary["frames"]["train"] == 2
