"""Backbones (registry by name), VGGFace weight readers, heads (registry by name)."""
