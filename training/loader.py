"""Batches for the training loops: decoded per batch by DataLoader worker processes, or from memory.

A split is an index of files (:class:`framewatch.training.data.SplitData`); pixels are never
all decoded up front unless they fit the cache budget (``cache_mb``): then they are decoded once
(by the same loader workers) and kept, which is faster for small sets; otherwise every epoch
decodes its batches in ``loader_workers`` processes, so memory does not grow with the data set.
``loader: auto`` chooses, and the run's metrics.json says which (``data.loader``).

Both paths give the same batches: the batch order comes from :func:`batch_indices` (the seed,
the epoch, DDP's rank and world), and stream augmentation draws from a generator seeded by
(seed, epoch, row), never by the worker that happens to decode the row. A streamed run and an
in-memory run of the same seed therefore train on identical pixels (tests/unit/test_data_tools.py).
``loader: auto`` streams whenever ``augment: stream`` is on: the per-frame augmentation is the
expensive part, and streamed it runs in the loader processes.

Augmentations (``augment``):

* ``flip`` (the measured default recipe): a horizontal flip of half the frames, drawn per batch.
* ``stream``: what live video does to frames, per frame: a random resized crop (scale 0.6–1,
  aspect 3:4–4:3), a horizontal flip, colour jitter (brightness, contrast, saturation ±25 %),
  and each with its own probability a downscale-upscale (to 35–75 % of the size), JPEG
  compression at quality 15–60 (blocky DCT artefacts, the same kind as H.264's at low bitrate;
  H.264 itself is not run per frame), and a Gaussian blur (radius 0.3–1.5 px).
* ``none``.

Evaluation never augments. ``framewatch data preview`` writes a grid of augmented samples.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from framewatch.training.data import DataError, SplitData, load_image

Augment = Literal["none", "flip", "stream"]
LoaderMode = Literal["auto", "memory", "streamed"]


# --- augmentation ------------------------------------------------------------------------------

@dataclass(frozen=True)
class StreamAugment:
    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: float = 0.25
    downscale_p: float = 0.3
    downscale: tuple[float, float] = (0.35, 0.75)
    jpeg_p: float = 0.4
    jpeg_quality: tuple[int, int] = (15, 60)
    blur_p: float = 0.2
    blur_radius: tuple[float, float] = (0.3, 1.5)


STREAM = StreamAugment()


def augment_frame(pixels: np.ndarray, rng: np.random.Generator, params: StreamAugment = STREAM) -> np.ndarray:
    """One frame (uint8 H×W×3 RGB) as live video might have delivered it; same size out."""
    height, width = pixels.shape[:2]
    image = Image.fromarray(pixels)
    # Random resized crop (torchvision's recipe: area fraction and log-uniform aspect).
    for _ in range(10):
        area = height * width * rng.uniform(*params.crop_scale)
        ratio = math.exp(rng.uniform(math.log(params.crop_ratio[0]), math.log(params.crop_ratio[1])))
        w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            image = image.crop((left, top, left + w, top + h)).resize((width, height), Image.Resampling.BILINEAR)
            break
    if rng.random() < params.flip_p:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(float(rng.uniform(1 - params.jitter, 1 + params.jitter)))
    if rng.random() < params.downscale_p:
        factor = rng.uniform(*params.downscale)
        small = (max(1, round(width * factor)), max(1, round(height * factor)))
        image = image.resize(small, Image.Resampling.BILINEAR).resize((width, height), Image.Resampling.BILINEAR)
    if rng.random() < params.jpeg_p:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(params.jpeg_quality[0], params.jpeg_quality[1] + 1)))
        buffer.seek(0)
        with Image.open(buffer) as compressed:
            image = compressed.convert("RGB")
    if rng.random() < params.blur_p:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(*params.blur_radius))))
    return np.asarray(image, dtype=np.uint8)


def frame_rng(seed: int, epoch: int, row: int) -> np.random.Generator:
    """The generator of one row's augmentation in one epoch: the same in any process."""
    return np.random.default_rng([seed, epoch, row])


def flip_batch(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The ``flip`` augmentation: half the frames mirrored, drawn from the epoch's generator."""
    flip = torch.rand(len(pixels), generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), pixels.flip(2), pixels)


# --- batch order ------------------------------------------------------------------------------

def batch_indices(n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
                  rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """The rows of each batch, in order: a permutation by the epoch's generator when shuffling.

    Under DDP every rank takes the same number of rows and so the same number of steps (the first
    rows are repeated, as torch's DistributedSampler does): a rank with one step more would wait
    forever in an all-reduce the others never join. A last shuffled batch of one row is dropped
    (BatchNorm cannot train on it; the row is seen again next epoch)."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if world > 1:
        padded = math.ceil(len(order) / world) * world
        order = order.repeat(math.ceil(padded / max(len(order), 1)))[:padded][rank::world]
    out = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if shuffle and len(idx) < 2 < len(order):
            break
        out.append(idx)
    return out


# --- decoding ------------------------------------------------------------------------------

class FrameFiles(TorchDataset):
    """Decodes rows of a split; a key is (row, (seed, epoch) of its stream augmentation, or None)."""

    def __init__(self, split: SplitData) -> None:
        self.paths = split.paths
        self.size = split.image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, tuple[int, int] | None]) -> tuple[int, np.ndarray | str]:
        row, seed = key
        try:
            pixels = load_image(self.paths[row], self.size)
        except (OSError, ValueError) as exc:  # a header that reads over a body that does not: dropped and counted
            return row, f"{self.paths[row]}: {exc.__class__.__name__}: {exc}"
        if seed is not None:
            pixels = augment_frame(pixels, frame_rng(seed[0], seed[1], row))
        return row, pixels


Batch = tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]


def _collate(items: list[tuple[int, np.ndarray | str]]) -> Batch:
    good = [(row, pixels) for row, pixels in items if not isinstance(pixels, str)]
    failed = [(row, pixels) for row, pixels in items if isinstance(pixels, str)]
    rows = torch.tensor([row for row, _ in good], dtype=torch.long)
    stacked = torch.from_numpy(np.stack([pixels for _, pixels in good])) if good else torch.empty((0, 0, 0, 3), dtype=torch.uint8)
    return rows, stacked, failed


class _Keys:
    """A batch sampler whose batches are set per epoch (DataLoader iterates it in this process)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, tuple[int, int] | None]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, tuple[int, int] | None]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class LoaderPlan:
    mode: Literal["memory", "streamed"]
    workers: int
    cache_bytes: int  # what decoding every split at the training size takes
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "workers": self.workers, "cache_mb": round(self.cache_bytes / 2**20, 1), "reason": self.reason}


def default_workers(world: int = 1) -> int:
    """Loader processes per training process: the cores this process may use (its CPU affinity,
    which cgroup limits narrow) shared by the ``world`` ranks, less one for training; 1 to 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 2
    return max(1, min(4, cores // max(world, 1) - 1))


def plan_loader(splits: list[SplitData], mode: LoaderMode, cache_mb: int, workers: int | None, augment: Augment = "flip",
                world: int = 1) -> LoaderPlan:
    rows = sum(len(s) for s in splits)
    size = max((s.image_size for s in splits), default=0)
    need = rows * size * size * 3
    chosen_workers = default_workers(world) if workers is None else workers
    if mode == "memory":
        return LoaderPlan("memory", chosen_workers, need, "loader: memory")
    if mode == "streamed":
        return LoaderPlan("streamed", chosen_workers, need, "loader: streamed")
    if augment == "stream":
        # Per-frame augmentation is the expensive part; streamed, the loader processes do it.
        return LoaderPlan("streamed", chosen_workers, need, "augment stream: frames are augmented in the loader processes")
    if need <= cache_mb * 2**20:
        return LoaderPlan("memory", chosen_workers, need, f"{need / 2**20:.0f} MB of frames fit cache_mb {cache_mb}")
    return LoaderPlan("streamed", chosen_workers, need, f"{need / 2**20:.0f} MB of frames exceed cache_mb {cache_mb}")


class SplitLoader:
    """Pixel batches of one split, streamed or from memory, in :func:`batch_indices` order.

    A file whose header reads but whose pixels do not (a truncated JPEG) is dropped from its batch
    and remembered in :attr:`failed`; more than ``max_bad_fraction`` of the split failing stops
    the run with the files named. Only the training split keeps its loader processes between
    epochs (``persistent``); validation and test start theirs when they are read."""

    def __init__(self, split: SplitData, plan: LoaderPlan, memory: torch.Tensor | None = None, persistent: bool = False,
                 max_bad_fraction: float = 0.01) -> None:
        self.split = split
        self.plan = plan
        self.persistent = persistent
        self.max_bad_fraction = max_bad_fraction
        self.failed: dict[int, str] = {}
        self._keys = _Keys()
        self._loader: DataLoader[Any] | None = None
        self._memory = memory
        self._generation = 0
        if plan.mode == "memory" and memory is None:
            self._memory = torch.from_numpy(split.pixels) if split.pixels is not None else self._decode_all()

    @classmethod
    def in_memory(cls, split: SplitData, pixels: torch.Tensor) -> SplitLoader:
        return cls(split, LoaderPlan("memory", 0, pixels.numel(), "given pixels"), pixels)

    def _dataloader(self, persistent: bool) -> DataLoader[Any]:
        if self._loader is None:
            workers = self.plan.workers
            # Its own generator: a DataLoader iterator otherwise draws its workers' base seed from
            # torch's global generator, which would shift dropout and initialisation between a
            # streamed and an in-memory run (measured: different losses from the first epoch).
            self._loader = DataLoader(FrameFiles(self.split), batch_sampler=self._keys, num_workers=workers,
                                      collate_fn=_collate, persistent_workers=persistent and workers > 0,
                                      prefetch_factor=4 if workers > 0 else None, generator=torch.Generator().manual_seed(0))
        return self._loader

    def _note_failures(self, failed: list[tuple[int, str]]) -> None:
        for row, reason in failed:
            self.failed[row] = reason
        if failed and len(self.failed) > self.max_bad_fraction * len(self.split):
            shown = "\n  ".join(list(self.failed.values())[:20])
            raise DataError(f"{len(self.failed)} image(s) of split {self.split.name} cannot be decoded (more than max_bad_fraction "
                            f"{self.max_bad_fraction:.1%}):\n  {shown}\n`framewatch data check` lists every unreadable file")

    def _decode_all(self) -> torch.Tensor:
        size = self.split.image_size
        out = torch.zeros((len(self.split), size, size, 3), dtype=torch.uint8)
        self._keys.batches = [[(i, None) for i in range(start, min(start + 64, len(self.split)))] for start in range(0, len(self.split), 64)]
        try:
            for rows, pixels, failed in self._dataloader(persistent=False):
                self._note_failures(failed)
                if len(rows):
                    out[rows] = pixels
        finally:
            self.close()  # the loader's processes are not needed again
        return out

    def __call__(self, order: list[torch.Tensor], augment_seed: tuple[int, int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(rows, uint8 N×S×S×3 pixels) per batch of ``order``; with ``augment_seed`` = (seed, epoch),
        every frame is stream-augmented by :func:`frame_rng` of its row. Rows that failed to
        decode are left out. One pass at a time: starting another abandons this one."""
        self._generation += 1
        generation = self._generation
        if self._memory is not None:
            for idx in order:
                if self.failed:
                    idx = idx[torch.tensor([int(r) not in self.failed for r in idx], dtype=torch.bool)]
                pixels = self._memory[idx]
                if augment_seed is not None:
                    pixels = torch.from_numpy(np.stack([augment_frame(p.numpy(), frame_rng(augment_seed[0], augment_seed[1], int(r)))
                                                        for p, r in zip(pixels, idx, strict=True)]))
                if len(idx):
                    yield idx, pixels
            return
        self._keys.batches = [[(int(i), augment_seed) for i in idx] for idx in order]
        for rows, pixels, failed in self._dataloader(self.persistent):
            if generation != self._generation:
                raise RuntimeError(f"split {self.split.name}: a second pass started before this one finished")
            self._note_failures(failed)
            if len(rows):
                yield rows, pixels
        if not self.persistent:
            self.close()

    def close(self) -> None:
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):  # persistent workers
            iterator._shutdown_workers()
        self._loader = None
