"""The guidance network's modules, shapes and the properties the paper's method relies on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from framewatch.training.models import (
    AttentionPool,
    FusionConfig,
    GuidanceNetwork,
    ImageClassifier,
    build_image_encoder,
    spatial_match_geometry,
)
from framewatch.training.models.encoders import TextEncoder


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.training_fixtures import make_tiny_text_encoder

    return make_tiny_text_encoder(tmp_path_factory.mktemp("tiny-bert"))


def test_spatial_match_is_the_papers_conv_at_224px() -> None:
    # MobileOne-S4 at 224 px gives 7×7; the paper maps it to 11×11 with a 3×3 conv, padding 3.
    assert spatial_match_geometry(7, 11) == (3, 3)
    for in_side in range(1, 20):
        kernel, padding = spatial_match_geometry(in_side, 11)
        assert in_side + 2 * padding - kernel + 1 == 11


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_shapes_through_every_module_at_paper_size(variant: str) -> None:
    torch.manual_seed(0)
    encoder = build_image_encoder("mobileone_s0")
    net = GuidanceNetwork(encoder, text_hidden=48, text_side=11, image_side=7, num_classes=2,
                          fusion=FusionConfig(variant, out_channels=64)).eval()  # type: ignore[arg-type]
    images, text = torch.randn(2, 3, 224, 224), torch.randn(2, 121, 48)
    features = encoder.forward_features(images)
    assert features.shape == (2, 1024, 7, 7)
    matched = net.spatial_match(features)
    assert matched.shape == (2, 1024, 11, 11)
    folded = net.fold_text(text)
    assert folded.shape == (2, 48, 11, 11)
    fused = net.fusion(torch.cat([matched, folded], 1))
    assert fused.shape == (2, 64, 11, 11)
    logits, attention = net(images, text)
    assert logits.shape == (2, 2)
    assert attention.shape == (2, 11, 11)  # the 11×11 map
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in net.fusion)
    assert has_bn == (variant == "paper")
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.fusion) == (3 if variant == "paper" else 2)


def test_fold_text_puts_token_i_at_row_i_div_s() -> None:
    net = GuidanceNetwork(build_image_encoder("mobileone_s0"), 4, 3, 2, 2, FusionConfig(out_channels=16))
    tokens = torch.arange(9, dtype=torch.float32).view(1, 9, 1).repeat(1, 1, 4)
    folded = net.fold_text(tokens)
    for i in range(9):
        assert folded[0, 0, i // 3, i % 3] == i


def test_attention_map_is_the_mean_tokens_weights_over_all_cells() -> None:
    """Fails on the official [:, 0, :-1] slice, which keeps the mean token and drops the last cell."""
    torch.manual_seed(0)
    pool = AttentionPool(side=3, dim=16, heads=4)
    fused = torch.randn(2, 16, 3, 3)
    _, attention = pool(fused)
    b, d = 2, 16
    tokens = fused.flatten(2).transpose(1, 2)
    tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], 1) + pool.positional
    weights = pool.attention_weights(tokens)  # B×(1+9), index 0 = the mean token itself
    assert torch.allclose(attention.reshape(b, 9), weights[:, 1:])
    assert not torch.allclose(attention.reshape(b, 9), weights[:, :-1])
    assert torch.allclose(weights.sum(-1), torch.ones(b))
    # Make the last spatial cell dominate: the map must show it at (2, 2), where [:-1] would lose it.
    fused_hot = torch.zeros(1, d, 3, 3)
    with torch.no_grad():
        pool.positional.zero_()
        pool.q.weight.copy_(torch.eye(d))
        pool.k.weight.copy_(torch.eye(d) * 50)
        pool.q.bias.zero_()
        pool.k.bias.zero_()
    fused_hot[0, :, 2, 2] = 1.0
    _, hot = pool(fused_hot)
    assert hot[0].argmax() == 8 and hot[0, 2, 2] > 0.3


def test_attention_matches_torch_multihead_attention_weights() -> None:
    torch.manual_seed(1)
    pool = AttentionPool(side=2, dim=8, heads=2)
    fused = torch.randn(3, 8, 2, 2)
    tokens = torch.cat([fused.flatten(2).transpose(1, 2).mean(1, keepdim=True), fused.flatten(2).transpose(1, 2)], 1) + pool.positional
    x = tokens.transpose(0, 1)
    _, reference = torch.nn.functional.multi_head_attention_forward(
        x[:1], x, x, 8, 2, None, torch.cat([pool.q.bias, pool.k.bias, pool.v.bias]), None, None, False, 0.0,
        pool.out.weight, pool.out.bias, training=False, need_weights=True, use_separate_proj_weight=True,
        q_proj_weight=pool.q.weight, k_proj_weight=pool.k.weight, v_proj_weight=pool.v.weight,
    )
    assert torch.allclose(pool.attention_weights(tokens), reference[:, 0], atol=1e-6)


def test_freezing_keeps_text_weights_bit_identical(tiny_text: Path) -> None:
    torch.manual_seed(0)
    text = TextEncoder(str(tiny_text), max_length=16)
    text.freeze()
    net = GuidanceNetwork(build_image_encoder("mobileone_s0"), text.hidden_size, 4, 2, 2, FusionConfig(out_channels=16))
    net.add_module("text_encoder", text)  # as training does when text is trained: frozen params still must not move
    before = {k: v.clone() for k, v in text.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    tokens = text.tokenize(["a fight breaks out", "chill stream"])
    logits, _ = net(torch.randn(2, 3, 64, 64), text(tokens["input_ids"], tokens["attention_mask"]))
    logits.sum().backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in text.state_dict().items())
    assert not text.model.training


def test_trained_text_does_move(tiny_text: Path) -> None:
    torch.manual_seed(0)
    text = TextEncoder(str(tiny_text), max_length=16)
    net = GuidanceNetwork(build_image_encoder("mobileone_s0"), text.hidden_size, 4, 2, 2, FusionConfig(out_channels=16))
    net.add_module("text_encoder", text)
    before = text.model.embeddings.word_embeddings.weight.clone()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    tokens = text.tokenize(["a fight breaks out", "chill stream"])
    logits, _ = net(torch.randn(2, 3, 64, 64), text(tokens["input_ids"], tokens["attention_mask"]))
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 0])).backward()
    optimizer.step()
    assert not torch.equal(before, text.model.embeddings.word_embeddings.weight)


def test_image_encoder_gets_gradient_through_the_attention_branch() -> None:
    torch.manual_seed(0)
    net = GuidanceNetwork(build_image_encoder("mobileone_s0"), 8, 4, 2, 2, FusionConfig(out_channels=16))
    images, text = torch.randn(2, 3, 64, 64), torch.randn(2, 16, 8)
    # Cut the direct path (image map → head) so only the attention branch can carry gradient.
    features = net.image_encoder.forward_features(images)
    image_map = net.spatial_match(features)
    fused = net.fusion(torch.cat([image_map, net.fold_text(text)], 1))
    _, attention = net.attention(fused)
    logits = net.head(image_map.detach() * (attention * 16).unsqueeze(1))
    logits[:, 1].sum().backward()
    grads = [p.grad for p in net.image_encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_adapt_stage_keeps_the_encoder_and_has_the_baselines_architecture() -> None:
    torch.manual_seed(0)
    net = GuidanceNetwork(build_image_encoder("mobileone_s0"), 8, 4, 2, 2, FusionConfig(out_channels=16))
    deployed = net.deployable(num_classes=2)
    baseline = ImageClassifier(build_image_encoder("mobileone_s0"), 2)
    for (name_a, a), (name_b, b) in zip(net.image_encoder.state_dict().items(), deployed.encoder.state_dict().items(), strict=True):
        assert name_a == name_b and torch.equal(a, b)
    assert [type(m) for m in deployed.modules()] == [type(m) for m in baseline.modules()]
    assert sum(p.numel() for p in deployed.parameters()) == sum(p.numel() for p in baseline.parameters())
    assert deployed(torch.randn(1, 3, 64, 64)).shape == (1, 2)


def test_text_max_length_must_be_square(tiny_text: Path) -> None:
    with pytest.raises(ValueError, match="square"):
        TextEncoder(str(tiny_text), max_length=20)


def test_reweighting_keeps_the_feature_scale() -> None:
    """The map (weights summing to < 1 over s² cells) is scaled by s²: uniform attention is the identity."""
    torch.manual_seed(0)
    net = GuidanceNetwork(build_image_encoder("mobileone_s0"), 8, 4, 2, 2, FusionConfig(out_channels=16)).eval()
    captured: dict[str, torch.Tensor] = {}
    net.head.register_forward_hook(lambda _m, inputs, _o: captured.setdefault("weighted", inputs[0]))
    images, text = torch.randn(2, 3, 64, 64), torch.randn(2, 16, 8)
    _, attention = net(images, text)
    image_map = net.spatial_match(net.image_encoder.forward_features(images))
    assert torch.allclose(captured["weighted"], image_map * attention.unsqueeze(1) * 16, atol=1e-5)
    ratio = captured["weighted"].abs().mean() / image_map.abs().mean()
    assert 0.3 < ratio < 3, f"re-weighting changed the feature scale by {ratio:.3f}"


def test_trained_text_encoder_gets_its_own_learning_rate(tiny_text: Path, tmp_path: Path) -> None:
    from framewatch.training.config import TrainConfig
    from framewatch.training.train import TEXT_MODULE, make_optimizer

    text = TextEncoder(str(tiny_text), max_length=16)
    net = GuidanceNetwork(build_image_encoder("mobileone_s0"), text.hidden_size, 4, 2, 2, FusionConfig(out_channels=16))
    net.add_module(TEXT_MODULE, text)
    cfg = TrainConfig(data=tmp_path, out=tmp_path, lr=2e-3, encoder_lr=5e-4, text_lr=2e-5)
    groups = make_optimizer(net, cfg).param_groups
    assert [g["lr"] for g in groups] == [2e-3, 5e-4, 2e-5]  # new layers, the image encoder, the text encoder
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in net.image_encoder.parameters()}
    assert {id(p) for p in groups[2]["params"]} == {id(p) for p in text.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_head_warmup_leaves_the_guided_encoder_bit_identical(tmp_path: Path) -> None:
    from rich.progress import Progress

    from framewatch.training.config import TrainConfig
    from framewatch.training.data import SplitData
    from framewatch.training.distributed import Placement
    from framewatch.training.train import SplitTensors, run_stage

    torch.manual_seed(0)
    model = ImageClassifier(build_image_encoder("mobileone_s0"), 2)
    pixels = torch.randint(0, 256, (24, 32, 32, 3), dtype=torch.uint8)
    labels = torch.arange(24) % 2
    split = SplitTensors(SplitData("train", pixels.numpy(), [""] * 24, labels.numpy()), pixels, labels)
    cfg = TrainConfig(data=tmp_path, out=tmp_path, image_size=32, batch_size=8, lr=1e-2, progress=False)

    def forward(batch: dict[str, torch.Tensor], train: bool) -> torch.Tensor:
        return model(batch["pixels"].permute(0, 3, 1, 2).float() / 255)  # type: ignore[no-any-return]

    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    with Progress(disable=True) as progress:
        run_stage("adapt-head", model, forward, lambda logits, b: torch.nn.functional.cross_entropy(logits, b["labels"]),
                  split, split, cfg, 2, Placement(torch.device("cpu")), 1, tmp_path / "ckpt.pt", progress, frozen=(model.encoder,))
    # Weights and BatchNorm running statistics alike: a frozen encoder stays in eval mode.
    assert all(torch.equal(encoder_before[k], v) for k, v in model.encoder.state_dict().items())
    assert any(not torch.equal(head_before[k], v) for k, v in model.head.state_dict().items())
    assert all(p.requires_grad for p in model.encoder.parameters())  # unfrozen again for the next stage
