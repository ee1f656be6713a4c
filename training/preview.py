"""``framewatch data preview``: a picture of what the training augmentation does to real frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from framewatch.training.data import load_dataset, load_image
from framewatch.training.loader import Augment, augment_frame, frame_rng


def write_preview(data: Path, out: Path, augment: Augment = "stream", samples: int = 6, variants: int = 5,
                  image_size: int = 96, seed: int = 0, scale: int = 2) -> Path:
    """A grid: one training frame per row, the original first, then ``variants`` augmented draws
    of the kind training makes (a run's own draws depend on its seed and its rows after carving)."""
    split = load_dataset(data, image_size, splits=("train",), max_bad_fraction=1.0, needs_text=False, check_images=True)["train"]
    rng = np.random.default_rng(seed)
    rows = sorted(rng.choice(len(split), size=min(samples, len(split)), replace=False).tolist())
    cell = image_size * scale
    pad, header = 4, 18
    grid = Image.new("RGB", (pad + (variants + 1) * (cell + pad), header + pad + len(rows) * (cell + pad)), "white")
    draw = ImageDraw.Draw(grid)
    titles = ["original"] + [f"{augment}, epoch {e}" for e in range(1, variants + 1)]
    for c, title in enumerate(titles):
        draw.text((pad + c * (cell + pad), 3), title, fill="black")
    for r, row in enumerate(rows):
        original = load_image(split.paths[row], image_size)
        frames = [original]
        for epoch in range(1, variants + 1):
            if augment == "stream":
                frames.append(augment_frame(original, frame_rng(seed, epoch, row)))
            elif augment == "flip":
                frames.append(original[:, ::-1] if frame_rng(seed, epoch, row).random() < 0.5 else original)
            else:
                frames.append(original)
        for c, pixels in enumerate(frames):
            tile = Image.fromarray(np.ascontiguousarray(pixels)).resize((cell, cell), Image.Resampling.NEAREST)
            grid.paste(tile, (pad + c * (cell + pad), header + pad + r * (cell + pad)))
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out
