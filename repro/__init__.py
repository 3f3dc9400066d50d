"""repro: the ReLabel reproduction suite (Yun et al., CVPR 2021), at ImageNet scale and on a generated world."""
