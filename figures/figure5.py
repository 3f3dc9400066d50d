"""Figure 5 (ReLabel confidence against crop IoU with the ground-truth box).

Not implemented yet: the confidence-vs-IoU curve
"""
from repro.experiment import Experiment

EXPERIMENT = Experiment(
    name="figure5",
    title="ReLabel confidence against crop IoU with the ground-truth box",
    paper_ref="Figure 5",
    missing="the confidence-vs-IoU curve",
)
