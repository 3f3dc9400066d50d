"""Table A1: Table 3's students on the three ImageNetV2 variants (matched frequency, threshold 0.7, top images).

The runs are Table 3's own (same configs, so the cached runs are reused); only the metrics differ.
"""
from repro.experiment import TrainingExperiment, annotator_report
from repro.tables.table3 import relabel_beats_the_others, runs

METRICS = ["imagenetv2_top_images_top1", "imagenetv2_matched_frequency_top1", "imagenetv2_threshold_0.7_top1"]

EXPERIMENT = TrainingExperiment(
    name="tableA1",
    title="Table 3's supervisions on ImageNetV2 top-images, matched-frequency and threshold-0.7",
    paper_ref="Table A1",
    runs=runs,
    report=annotator_report,
    metrics=METRICS,
    claims=relabel_beats_the_others(METRICS),
    claim_seeds={"proxy": 5},  # ImageNetV2's gains straddle zero at 3 seeds; Tables 3 and A1 share their students
)
