"""The model side of the recipe: packaged ImageNet weights that are real, weights files loaded
strictly, a head that keeps firing, paired comparisons and learning-curve subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("name", ["efficientnet_lite0"])
def test_packaged_weights_are_real_imagenet_weights(name: str) -> None:
    """Untouched, the packaged model names a real photo that ships with matplotlib (Grace Hopper in
    uniform): ImageNet class 652, "military uniform", on top. Random weights would not."""
    import matplotlib.cbook
    import timm
    from PIL import Image

    from framewatch.training.models.weights import PACKAGED, lukemelas_to_timm, packaged_file, read_state_dict

    model = timm.create_model(PACKAGED[name][0]).eval()  # with its ImageNet classifier
    model.load_state_dict(lukemelas_to_timm(read_state_dict(packaged_file(name)), model), strict=True)
    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    pixels = np.asarray(photo.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32).copy()
    x = (torch.from_numpy(pixels).permute(2, 0, 1)[None] / 255 - 0.5) / 0.5  # mean = std = 0.5
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    assert int(probs.argmax()) == 652 and float(probs[652]) > 0.2


def test_pretrained_encoder_builds_offline_with_the_packaged_weights() -> None:
    from framewatch.training.models import build_image_encoder
    from framewatch.training.models.encoders import image_data_config
    from framewatch.training.models.weights import packaged_file, read_state_dict

    encoder = build_image_encoder("efficientnet_lite0", pretrained=True)
    assert image_data_config(encoder)["mean"] == (0.5, 0.5, 0.5)
    stem = read_state_dict(packaged_file("efficientnet_lite0"))["_conv_stem.weight"]
    assert torch.equal(encoder.state_dict()["conv_stem.weight"], stem)
    assert not torch.equal(build_image_encoder("efficientnet_lite0").state_dict()["conv_stem.weight"], stem)


@pytest.mark.slow  # 38 s: builds four encoders; `make test-slow`
def test_image_weights_load_strictly_or_name_the_keys(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from framewatch.training.models import build_image_encoder
    from framewatch.training.models.encoders import WeightsError

    source = build_image_encoder("mobileone_s0")
    torch.save(source.state_dict(), tmp_path / "s0.pt")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "s0.safetensors"))
    for path in (tmp_path / "s0.pt", tmp_path / "s0.safetensors"):
        loaded = build_image_encoder("mobileone_s0", weights=path)
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in source.state_dict().items())
    with pytest.raises(WeightsError) as info:
        build_image_encoder("mobileone_s1", weights=tmp_path / "s0.pt")  # another model's file
    assert "does not fit" in str(info.value)
    torch.save({**source.state_dict(), "extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(WeightsError, match=r"unexpected keys: extra\.weight"):
        build_image_encoder("mobileone_s0", weights=tmp_path / "extra.pt")
    partial = dict(source.state_dict())
    partial.pop("stem.conv_kxk.0.conv.weight")
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(WeightsError, match=r"missing keys: stem\.conv_kxk\.0\.conv\.weight"):
        build_image_encoder("mobileone_s0", weights=tmp_path / "partial.pt")
    with pytest.raises(WeightsError, match="does not exist"):
        build_image_encoder("mobileone_s0", weights=tmp_path / "nope.pt")
    # a lukemelas EfficientNet file of another model: the error says so, no IndexError
    from framewatch.training.models.weights import packaged_file
    with pytest.raises(WeightsError, match="lukemelas"):
        build_image_encoder("mobileone_s0", weights=packaged_file("efficientnet_lite0"))


def test_the_head_keeps_firing_on_non_negative_features() -> None:
    """The old head (pool → Linear → ReLU) on the encoder's non-negative output: a few steps of AdamW
    at 2e-3 on one-signed inputs kill most units. The LayerNorm keeps them alive."""
    from framewatch.training.models.guidance import ClassifierHead

    torch.manual_seed(0)
    features = torch.rand(256, 64, 2, 2) * 3  # non-negative, like a ReLU-ended encoder's map
    labels = (features[:, :8].mean(dim=(1, 2, 3)) > 1.5).long()

    def firing(head: torch.nn.Module, hidden: torch.nn.Module) -> float:
        fired = []
        handle = hidden.register_forward_hook(lambda _m, _i, out: fired.append((out > 0).any(dim=0)))
        head.eval()
        with torch.no_grad():
            head(features)
        handle.remove()
        return float(fired[0].float().mean())

    class OldHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(64, 32), torch.nn.Linear(32, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3)))))

    heads = {"old": OldHead(), "new": ClassifierHead(64, 2, dropout=0.0)}
    for head in heads.values():
        optimizer = torch.optim.AdamW(head.parameters(), lr=2e-2)
        for _ in range(60):
            head.train()
            loss = torch.nn.functional.cross_entropy(head(features), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert firing(heads["new"], heads["new"].fc1) > 0.6
    assert firing(heads["new"], heads["new"].fc1) > firing(heads["old"], heads["old"].fc1)


def test_paired_difference_is_the_paired_t_interval() -> None:
    from scipy import stats

    from framewatch.training.compare import paired_difference

    ours = {0: 0.91, 1: 0.88, 2: 0.93, 3: 0.90, 4: 0.89}
    base = {0: 0.88, 1: 0.87, 2: 0.90, 3: 0.89, 4: 0.86, 5: 0.99}  # seed 5 has no pair: left out
    diff = paired_difference(ours, base)
    assert diff is not None and diff["n"] == 5 and diff["mean"] == pytest.approx(0.022)
    test = stats.ttest_rel(list(ours.values()), [base[s] for s in ours])
    interval = test.confidence_interval(0.95)
    assert (diff["ci_low"], diff["ci_high"]) == pytest.approx((interval.low, interval.high))
    assert diff["excludes_zero"] == bool(test.pvalue < 0.05)
    assert paired_difference({0: 0.5}, {0: 0.4}) is None  # one pair has no interval


def test_stratified_subset_is_drawn_by_the_seed_and_keeps_the_classes() -> None:
    from framewatch.training.data import SplitData, stratified_subset

    labels = np.array([0] * 60 + [1] * 40)
    split = SplitData("train", np.zeros((100, 4, 4, 3), np.uint8), [str(i) for i in range(100)], labels, [f"{i}.png" for i in range(100)])
    a, b, c = stratified_subset(split, 20, 3), stratified_subset(split, 20, 3), stratified_subset(split, 20, 4)
    assert a.files == b.files and a.files != c.files
    assert len(a) == 20 and (a.labels == 0).sum() == 12 and (a.labels == 1).sum() == 8
    assert stratified_subset(split, 500, 0) is split
    even = SplitData("train", np.zeros((400, 4, 4, 3), np.uint8), ["t"] * 400, np.array([0, 1] * 200), [f"{i}.png" for i in range(400)])
    assert len(stratified_subset(even, 5, 0)) == 5  # rounding never loses a row


def test_the_default_recipe_is_the_schema_s_defaults() -> None:
    """One recipe: the file the demo and the report name, and what `framewatch train` does with no flags."""
    import yaml

    from framewatch.training.config import RECIPES_DIR, TrainConfig

    recipe = yaml.safe_load((RECIPES_DIR / "default.yaml").read_text())
    defaults = TrainConfig(data=Path("."), out=Path("."))
    assert recipe and all(getattr(defaults, key) == value for key, value in recipe.items()), recipe


def test_report_pairs_seeds_per_size_and_draws_the_learning_curve(tmp_path: Path) -> None:
    import json

    from framewatch.training.report import write_report

    def run(variant: str, mode: str, size: int | None, seed: int, acc: float, epochs: int = 4, **extra: object) -> Path:
        folder = tmp_path / f"{variant}-{size}-{seed}".replace(" ", "_")
        folder.mkdir()
        config = {"mode": mode, "seed": seed, "train_size": size, "epochs": epochs, "data": str(tmp_path), "image_size": 96, **extra}
        test = {"accuracy": acc, "f1": acc - 0.01, "roc_auc": acc + 0.05, "precision": acc, "recall": acc, "majority_accuracy": 0.5}
        metrics = {"variant": variant, "mode": mode, "deployed_inputs": "image", "splits": {"test": test},
                   "data": {"sizes": {"train": 400}}, "head_firing": 1.0, "train_seconds": 1.0}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "metrics.json").write_text(json.dumps(metrics))
        return folder

    runs = []
    for size in (50, None):
        for seed in range(4):
            base = 0.70 + 0.02 * seed + (0.1 if size is None else 0)
            runs.append(run("baseline", "baseline", size, seed, base))
            runs.append(run("guidance (text frozen)", "guidance", size, seed, base + (0.03 if size == 50 else 0.0) + 0.001 * seed))
            runs.append(run("baseline (step-matched)", "baseline", size, seed, base + 0.01 * (seed % 2), epochs=8))
            # each seed's distill learns from its own teacher run: one row all the same
            runs.append(run("distill", "distill", size, seed, base, teacher=str(tmp_path / f"guidance-{seed}")))
            # another data set: a row of its own, never paired with this data's baseline
            runs.append(run("elsewhere", "guidance", size, seed, base + 0.2, data=str(tmp_path / "other")))
    md, js = write_report(runs, tmp_path / "out" / "report.md", measure_latency=False, trivial=False)
    report = json.loads(js.read_text())
    by = {(c["variant"], c["reference"], c["train_size"], c["metric"]): c for c in report["comparisons"]}
    small = by[("guidance (text frozen)", "baseline", 50, "accuracy")]
    assert small["n"] == 4 and small["mean"] == pytest.approx(0.0315) and small["excludes_zero"]
    full = by[("guidance (text frozen)", "baseline", None, "accuracy")]
    assert full["mean"] == pytest.approx(0.0015) and full["ci_low"] < full["mean"] < full["ci_high"]
    assert ("guidance (text frozen)", "baseline (step-matched)", 50, "accuracy") in by
    assert ("distill", "baseline", None, "accuracy") in by
    assert not any(key[0] == "elsewhere" for key in by)
    text = md.read_text()
    assert "Paired differences against the baseline" in text
    assert "| guidance (text frozen) | baseline | 50 | 4 | **+3." in text  # bold: the interval excludes 0
    assert (tmp_path / "out" / "report-learning-curve.png").stat().st_size > 10_000
