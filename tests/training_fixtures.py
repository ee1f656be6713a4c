"""Small real models for training tests: a randomly initialised tiny BERT with the MiniLM
tokenizer, saved and loaded through the same from_pretrained path as any Hugging Face model."""

from __future__ import annotations

from pathlib import Path


def make_tiny_text_encoder(folder: Path, hidden: int = 32) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from training.models.encoders import resolve_text_encoder

    tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
