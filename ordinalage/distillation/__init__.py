"""Distillation: one student model trained on a teacher's (usually an ensemble's) label
distributions, so that serving costs one forward pass per face (`ordinalage distill`)."""

from ordinalage.distillation.student import distill, student_config
from ordinalage.distillation.teacher import teacher_targets

__all__ = ["distill", "student_config", "teacher_targets"]
