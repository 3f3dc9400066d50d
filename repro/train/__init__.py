"""The shared trainer: every classifier of the suite (students of each supervision mode, the annotator)."""
from repro.train.distributed import DistEnv, init_distributed
from repro.train.recipes import annotator_recipe
from repro.train.supervision import MODES, Supervision, agreeing_indices, build_teacher, cutmix
from repro.train.trainer import HISTORY_FILE, MODEL_FILE, batch_split, train_classifier

__all__ = ["DistEnv", "init_distributed", "annotator_recipe", "MODES", "Supervision", "agreeing_indices",
           "build_teacher", "cutmix", "HISTORY_FILE", "MODEL_FILE", "batch_split", "train_classifier"]
