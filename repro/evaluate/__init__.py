"""Classification metrics: ImageNet val top-1/top-5 and per-class, ReaL, the Shankar-style set and ImageNetV2."""
from repro.evaluate.classification import (eval_settings, evaluate_model, multilabel_accuracy, per_class_accuracy,
                                           predict_logits, set_metrics)

__all__ = ["eval_settings", "evaluate_model", "multilabel_accuracy", "per_class_accuracy", "predict_logits",
           "set_metrics"]
