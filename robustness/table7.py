"""Table 7 (robustness of vanilla vs ReLabel students: FGSM, ImageNet-A, ImageNet-C).

Not implemented yet: the FGSM evaluator, the corruption suite (imagecorruptions) and the hard-example set of the world
"""
from repro.experiment import Experiment

EXPERIMENT = Experiment(
    name="table7",
    title="robustness of vanilla vs ReLabel students: FGSM, ImageNet-A, ImageNet-C",
    paper_ref="Table 7",
    missing="the FGSM evaluator, the corruption suite (imagecorruptions) and the hard-example set of the world",
)
