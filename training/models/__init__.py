"""Models: encoders (timm images, Hugging Face text) and the guidance network family."""

from framewatch.training.models.encoders import (
    TextEncoder,
    build_image_encoder,
    build_text_encoder,
    resolve_text_encoder,
)
from framewatch.training.models.guidance import (
    FUSION_VARIANTS,
    AttentionPool,
    ClassifierHead,
    FusionConfig,
    GuidanceNetwork,
    ImageClassifier,
    SpatialMatch,
    spatial_match_geometry,
)

__all__ = [
    "FUSION_VARIANTS",
    "AttentionPool",
    "ClassifierHead",
    "FusionConfig",
    "GuidanceNetwork",
    "ImageClassifier",
    "SpatialMatch",
    "TextEncoder",
    "build_image_encoder",
    "build_text_encoder",
    "resolve_text_encoder",
    "spatial_match_geometry",
]
