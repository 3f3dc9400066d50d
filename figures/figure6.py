"""Figure 6 (top-1 against training cost for ReLabel and online knowledge distillation).

Not implemented yet: the KD runs with teachers of several sizes
"""
from repro.experiment import Experiment

EXPERIMENT = Experiment(
    name="figure6",
    title="top-1 against training cost for ReLabel and online knowledge distillation",
    paper_ref="Figure 6",
    missing="the KD runs with teachers of several sizes",
)
