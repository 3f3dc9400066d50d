"""Loaders for ImageNet-layout installations (real ImageNet or the generated world): image lists, training crops
with their boxes and label maps, evaluation views, ReaL-format label sets and ImageNetV2 folders."""
from repro.data.datasets import EpochSampler, EvalImages, TrainCrops
from repro.data.folders import ImageList, image_folder, integer_folder, read_classes, unlabelled_folder
from repro.data.imagenet import IMAGENET_V2, EvalSet, ImageNetData, open_imagenet
from repro.data.labelsets import read_label_sets, timm_real_json
from repro.data.transforms import EvalView, TrainCrop, normalize, read_image

__all__ = ["EpochSampler", "EvalImages", "TrainCrops", "ImageList", "image_folder", "integer_folder",
           "read_classes", "IMAGENET_V2", "EvalSet", "ImageNetData", "open_imagenet", "read_label_sets",
           "timm_real_json", "EvalView", "TrainCrop", "normalize", "read_image", "unlabelled_folder"]
