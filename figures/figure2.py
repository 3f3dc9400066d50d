"""Figure 2 (CDF of IoU between RandomResizedCrop boxes and ground-truth boxes).

Not implemented yet: the plot over the validation boxes
"""
from repro.experiment import Experiment

EXPERIMENT = Experiment(
    name="figure2",
    title="CDF of IoU between RandomResizedCrop boxes and ground-truth boxes",
    paper_ref="Figure 2",
    missing="the plot over the validation boxes",
)
