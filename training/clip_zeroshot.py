"""CLIP zero-shot baseline of the paper: one text prompt per class, highest similarity wins.

The paper's prompts are "a in-game photo" (non-violent) and "a violative photo" (violent);
ViT-B/16 was its best CLIP. Prompts are bound to class names (:func:`prompts_for`): with labels
``["violent", "non-violent"]`` a positional binding would score the violent class with the calm
prompt and report 1 − AUC. The model is any Hugging Face CLIP by name or local folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from framewatch.training.data import DataError, load_dataset
from framewatch.training.metrics import binary_metrics, choose_threshold

# The paper's prompts, by what they describe: bound to the classes by name, never by position.
PAPER_PROMPT_VIOLENT = "a violative photo"
PAPER_PROMPT_CALM = "a in-game photo"


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


def prompts_for(labels: list[str], violent_index: int, prompts: list[str] | dict[str, str] | None = None) -> list[str]:
    """One prompt per class, in label order. ``prompts`` maps label names to prompts, or lists
    them in label order; by default the violent class gets the paper's "a violative photo" and
    every other class "a in-game photo", whatever the order of the labels."""
    if prompts is None:
        return [PAPER_PROMPT_VIOLENT if i == violent_index else PAPER_PROMPT_CALM for i in range(len(labels))]
    if isinstance(prompts, dict):
        missing = [name for name in labels if name not in prompts]
        if missing:
            raise DataError(f"no prompt for label(s) {missing}; labels are {labels}")
        return [prompts[name] for name in labels]
    if len(prompts) != len(labels):
        raise DataError(f"give one prompt per class, in label order {labels}, got {len(prompts)}")
    return list(prompts)


def evaluate_clip(data: Path, model_name: str, prompts: list[str] | dict[str, str] | None, image_size: int, split: str = "test",
                  out: Path | None = None, positive_label: str | None = None) -> dict[str, Any]:
    dataset = load_dataset(data, image_size, positive_label=positive_label)
    violent = dataset.violent_index
    bound = prompts_for(dataset.labels, violent, prompts)
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in ("val", split):
        probs = clip_scores(model_name, dataset[name].images, bound)
        scores[name] = ((dataset[name].labels == violent).astype(np.int64), probs[:, violent])
    point = choose_threshold(*scores["val"])
    threshold = point.threshold
    result: dict[str, Any] = {
        "mode": "clip", "variant": f"CLIP zero-shot ({Path(model_name).name})", "deployed_inputs": "image",
        "prompts": dict(zip(dataset.labels, bound, strict=True)), "threshold": threshold, "operating_point": point.to_json(),
        "splits": {n: binary_metrics(lab, sc, threshold) for n, (lab, sc) in scores.items()},
        "labels": dataset.labels, "violent_index": violent,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
        (out / "config.json").write_text(json.dumps({"mode": "clip", "model": model_name, "data": str(data), "prompts": result["prompts"]}, indent=2) + "\n")
    return result
