"""The YAML front matter of MODEL_CARD.md: Hugging Face's model-card metadata (license, datasets,
metrics, and a `model-index` holding the measured results), so that `huggingface_hub.ModelCard`
and the Hub read the card. Built only from what the evaluation measured."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

# the metric keys of metrics.json in the model-index, with the names the Hub shows
HUB_METRICS = (("mae", "MAE (years)"), ("accuracy", "Age-group accuracy"),
               ("one_off", "One-off (1 exact group, 0.5 adjacent)"), ("ca3", "CA(3)"), ("ca5", "CA(5)"))
UNKNOWN_TERMS = ("training-data-terms", "https://github.com/ordinalage/ordinalage/blob/main/docs/datasets.md")


def _kind(spec: str) -> str:
    """A data spec's kind: 'utkface:DIR?x' -> 'utkface', 'synth' -> 'synth'."""
    return spec.strip().partition(":")[0].partition("?")[0]


def _terms(kinds: Sequence[str]) -> tuple[str, str | None, str | None]:
    """(license, license_name, license_link): the package's MIT when every source is the package's own
    synthetic faces, else `other` named after the restricting data's terms."""
    from ordinalage.data.sources import READERS

    restricted = [READERS[k].terms if k in READERS and READERS[k].terms else UNKNOWN_TERMS
                  for k in kinds if not (k in READERS and READERS[k].synthetic)]
    if not restricted:
        return "mit", None, None
    names = list(dict.fromkeys(name for name, _ in restricted))
    return "other", "+".join(names), restricted[0][1]


def hub_metadata(title: str, metrics: Mapping[str, Any], data_specs: Sequence[str],
                 train_specs: Sequence[str], head: str | None, backbone: str | None,
                 cis: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The card's metadata: licence from the training and evaluated data's terms, datasets by kind,
    and the evaluation's metrics (adapted ones say so) in a model-index."""
    kinds = list(dict.fromkeys(_kind(s) for s in [*train_specs, *data_specs]))
    license_, name, link = _terms(kinds)
    prior = (metrics.get("prior") or {}).get("name") if isinstance(metrics.get("prior"), dict) else metrics.get("prior")
    suffix = f", adapted to the {prior} age mix" if prior else ""
    results = []
    for key, label in HUB_METRICS:
        value = metrics.get(key)
        if value is None:
            continue
        ci = (cis or {}).get(key) or {}
        interval = (f", 95% CI [{float(ci['lo']):.3f}, {float(ci['hi']):.3f}]"
                    if ci.get("lo") is not None and ci.get("hi") is not None else "")
        results.append({"type": key, "value": round(float(value), 4), "name": f"{label}{interval}{suffix}"})
    evaluated = [_kind(s) for s in data_specs] or ["unknown"]
    meta: dict[str, Any] = {"license": license_}
    if name:
        meta.update(license_name=name, license_link=link)
    meta.update({
        "library_name": "ordinalage",
        "pipeline_tag": "image-classification",  # the Hub has no image-regression task
        "tags": [t for t in ("age-estimation", "ordinal-regression", "ordinalage", head, backbone) if t],
        "datasets": [k for k in kinds if k != "synth"] or ["synthetic"],
        "metrics": [key for key, _ in HUB_METRICS],
        "model-index": [{"name": title, "results": [{
            "task": {"type": "image-classification", "name": "Facial age estimation"},
            "dataset": {"type": evaluated[0], "name": evaluated[0], "split": str(metrics.get("split", "test")),
                        "args": f"{', '.join(data_specs) or '-'}; {metrics.get('n', '?')} images"},
            "metrics": results}]}],
    })
    return meta


def front_matter(meta: Mapping[str, Any]) -> str:
    """`---`, the metadata as YAML, `---`: the first lines of the card."""
    return "---\n" + yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True) + "---\n\n"


def strip_front_matter(md: str) -> str:
    """The card without its metadata block (for pages that render the Markdown)."""
    if md.startswith("---\n"):
        _, sep, rest = md[4:].partition("\n---\n")
        if sep:
            return rest.lstrip("\n")
    return md


__all__ = ["HUB_METRICS", "front_matter", "hub_metadata", "strip_front_matter"]
