"""Small real models for training tests: a randomly initialised tiny BERT with the MiniLM
tokenizer, saved and loaded through the same from_pretrained path as any Hugging Face model."""

from __future__ import annotations

from pathlib import Path


def make_tiny_text_encoder(folder: Path, hidden: int = 32) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from framewatch.training.models.encoders import resolve_text_encoder

    tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def calibrate_batchnorm(run: Path, data: Path, image_size: int) -> None:
    """One epoch on a tiny set leaves BatchNorm running statistics far from the data's, and the
    eval-mode outputs saturate at 0/1, where any graph "matches" and no score moves. Re-estimate
    them (cumulative average over the training images) so tests see informative probabilities."""
    import torch

    from framewatch.training.data import load_dataset
    from framewatch.training.preprocess import Preprocess
    from framewatch.training.runs import load_image_classifier

    payload = torch.load(run / "model.pt", weights_only=False)
    model, _ = load_image_classifier(run)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    images = torch.from_numpy(load_dataset(data, image_size, splits=("train",))["train"].images)
    with torch.no_grad():
        model(Preprocess(payload["mean"], payload["std"])(images))
    payload["state_dict"] = model.state_dict()
    torch.save(payload, run / "model.pt")
