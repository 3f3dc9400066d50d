"""Table 6 (and Section 3.3's storage study): how coarse may the stored label maps be?

The label maps are stored as top-k logits; the variants keep fewer classes (k = 1, 3, 5, 10) or fewer bits
(fp32, fp16, 8-bit), all derived from one annotator pass. Storage per image is reported beside accuracy. The paper:
16- and 8-bit maps lose 0.1 and 0.3 pp; k = 5 is a good trade-off.
"""
from repro.claims import Claim
from repro.experiment import TrainingExperiment, annotator_report

VARIANTS = {
    "relabel_fp32_top5": ("fp32", 5),
    "relabel_fp16_top5": ("fp16", 5),
    "relabel_8bit_top5": ("int8", 5),
    "relabel_fp32_top1": ("fp32", 1),
    "relabel_fp32_top3": ("fp32", 3),
    "relabel_fp32_top10": ("fp32", 10),
}


def runs(config):
    settings = {("resnet50", "baseline"): {"supervision.mode": "original"}}
    for name, (dtype, k) in VARIANTS.items():
        settings[("resnet50", name)] = {"supervision.mode": "relabel", "labelmap.dtype": dtype, "labelmap.topk": k}
    return settings


EXPERIMENT = TrainingExperiment(
    name="table6",
    title="label-map storage vs accuracy: fp32/fp16/8-bit, top-k in {1, 3, 5, 10}",
    paper_ref="Table 6",
    runs=runs,
    report=annotator_report,
    metrics=["imagenet_top1", "labelmap_bytes_per_image"],
    claims=[
        Claim("ReLabel (fp32, top-5) > baseline", better="relabel_fp32_top5", worse="baseline"),
        Claim("16-bit maps within 0.3 pp of fp32", kind="not_worse", margin=0.3,
              better="relabel_fp16_top5", worse="relabel_fp32_top5"),
        Claim("8-bit maps within 0.3 pp of fp32", kind="not_worse", margin=0.3,
              better="relabel_8bit_top5", worse="relabel_fp32_top5"),
        Claim("k = 5 a good trade-off: within 0.3 pp of k = 10", kind="not_worse", margin=0.3,
              better="relabel_fp32_top5", worse="relabel_fp32_top10"),
        Claim("k = 5 beats k = 1", better="relabel_fp32_top5", worse="relabel_fp32_top1"),
    ],
)
