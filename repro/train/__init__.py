from repro.train.distributed import DistEnv, init_distributed
from repro.train.objectives import OBJECTIVES, Objective, agreeing_indices, cutmix, objective_spec, register_objective
from repro.train.trainer import HISTORY_FILE, InitialWeights, batch_split, train_classifier

__all__ = ["DistEnv", "init_distributed", "OBJECTIVES", "Objective", "agreeing_indices", "cutmix", "objective_spec",
           "register_objective", "HISTORY_FILE", "InitialWeights", "batch_split", "train_classifier"]
