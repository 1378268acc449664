"""The age heads, for use in your own training loop: `from ordinalage.heads import CoralHead`.

Each head is an `nn.Module` built from a `ModelConfig`, the number of input features and the
`AgeGroups`: `forward(features (N, F)) -> logits`, `loss(logits, age, group) -> scalar` (float32),
`decode(logits) -> Decoded(group, age, group_proba, rank_proba, label_proba)`. See docs/heads.md.

A new head is one `Head` subclass that declares its traits (`title`, `description`,
`default_decoder`, `soft_labels`, `output`, `distill_student`) and is registered with
`@register_head("name")`; `head_traits(name)` reads them back without building a model.
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
    HeadTraits,
    RegressionHead,
    build_head,
    head_traits,
    register_head,
)

__all__ = ["AgeGroups", "ClassHead", "CoralHead", "CornHead", "Decoded", "DldlV2Head", "Head", "HeadTraits",
           "MeanVarianceHead", "ModelConfig", "OrcnnHead", "RegressionHead", "SordHead", "UnimodalHead", "build_head",
           "head_traits", "register_head"]
