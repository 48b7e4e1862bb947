"""Evaluation of a trained run: ``vitdense.evaluate`` (per-class scores, confusion matrix, per-image records) for the
notebooks and ``vitdense evaluate``."""

from vitdense.evaluation.report import EvaluationReport, evaluate

__all__ = ["EvaluationReport", "evaluate"]
