"""The age heads, for use in your own training loop: `from ordinalage.heads import CoralHead`.

Each head is an `nn.Module` built from a `ModelConfig`, the number of input features and the
`AgeGroups`: `forward(features (N, F)) -> logits`, `loss(logits, age, group) -> scalar` (float32),
`decode(logits) -> Decoded(group, age, group_proba, rank_proba, label_proba)`. See docs/heads.md.
"""

from ordinalage.config import ModelConfig
from ordinalage.groups import AgeGroups
from ordinalage.models.field_heads import DldlV2Head, MeanVarianceHead, OrcnnHead, SordHead, UnimodalHead
from ordinalage.models.heads import (
    ClassHead,
    CoralHead,
    CornHead,
    Decoded,
    Head,
    RegressionHead,
    build_head,
)

__all__ = ["AgeGroups", "ClassHead", "CoralHead", "CornHead", "Decoded", "DldlV2Head", "Head", "MeanVarianceHead",
           "ModelConfig", "OrcnnHead", "RegressionHead", "SordHead", "UnimodalHead", "build_head"]
