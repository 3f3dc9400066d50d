"""Table 8 (fine-grained transfer of vanilla vs ReLabel backbones to five small tasks).

Not implemented yet: the fine-tuning loop with a per-task learning-rate and weight-decay grid over the world's downstream tasks
"""
from repro.experiment import Experiment

EXPERIMENT = Experiment(
    name="table8",
    title="fine-grained transfer of vanilla vs ReLabel backbones to five small tasks",
    paper_ref="Table 8",
    missing="the fine-tuning loop with a per-task learning-rate and weight-decay grid over the world's downstream tasks",
)
