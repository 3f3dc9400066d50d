"""Figure 4 (student top-1 against annotator top-1 over a sweep of annotators).

Not implemented yet: the annotator sweep
"""
from repro.experiment import Experiment

EXPERIMENT = Experiment(
    name="figure4",
    title="student top-1 against annotator top-1 over a sweep of annotators",
    paper_ref="Figure 4",
    missing="the annotator sweep",
)
