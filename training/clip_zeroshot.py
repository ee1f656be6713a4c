"""CLIP zero-shot baseline of the paper: one text prompt per class, highest similarity wins.

The paper's prompts are "a in-game photo" (non-violent) and "a violative photo" (violent);
ViT-B/16 was its best CLIP. The model is any Hugging Face CLIP by name or local folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.data import load_dataset
from training.metrics import best_f1_threshold, binary_metrics

PAPER_PROMPTS = ["a in-game photo", "a violative photo"]


@torch.no_grad()
def clip_scores(model_name: str, images: np.ndarray, prompts: list[str], batch_size: int = 32) -> np.ndarray:
    """Softmax over prompts of CLIP's image–text similarity: N×len(prompts)."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(model_name).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    processor = AutoImageProcessor.from_pretrained(model_name)
    text = tokenizer(prompts, padding=True, return_tensors="pt")
    text_features = model.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"])
    text_features = _as_tensor(text_features)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    out = []
    for start in range(0, len(images), batch_size):
        pixels = processor(images=list(images[start : start + batch_size]), return_tensors="pt")["pixel_values"]
        image_features = _as_tensor(model.get_image_features(pixel_values=pixels))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        out.append(logits.softmax(-1).numpy())
    return np.concatenate(out)


def _as_tensor(features: Any) -> torch.Tensor:
    # transformers 5 may return a model output instead of a bare tensor.
    if isinstance(features, torch.Tensor):
        return features
    return features.pooler_output if getattr(features, "pooler_output", None) is not None else features[0]


def evaluate_clip(data: Path, model_name: str, prompts: list[str] | None, image_size: int, split: str = "test", out: Path | None = None) -> dict[str, Any]:
    dataset = load_dataset(data, image_size)
    prompts = prompts or PAPER_PROMPTS
    if len(prompts) != len(dataset.labels):
        raise ValueError(f"give one prompt per class ({dataset.labels}), got {len(prompts)}")
    violent = dataset.violent_index
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in ("val", split):
        probs = clip_scores(model_name, dataset[name].images, prompts)
        scores[name] = ((dataset[name].labels == violent).astype(np.int64), probs[:, violent])
    threshold = best_f1_threshold(*scores["val"])
    result: dict[str, Any] = {
        "mode": "clip", "variant": f"CLIP zero-shot ({Path(model_name).name})", "deployed_inputs": "image", "prompts": prompts,
        "threshold": threshold, "splits": {n: binary_metrics(lab, sc, threshold) for n, (lab, sc) in scores.items()},
        "labels": dataset.labels, "violent_index": violent,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
        (out / "config.json").write_text(json.dumps({"mode": "clip", "model": model_name, "data": str(data), "prompts": prompts}, indent=2) + "\n")
    return result
