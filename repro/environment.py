"""What computed a set of results: the kind of CPU, the accelerator and the versions of the packages that can change
a number. The report prints it, each run records it (`computing_device`), and the smoke regression record is kept per
CPU kind (`cpu_kind`)."""
from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn", "scikit-image", "Pillow",
            "imagecorruptions", "matplotlib", "mmdet", "mmengine", "mmcv", "pycocotools", "Jinja2")


def cpu_kind() -> str:
    """Architecture, torch's kernel level and the CPU's model name: the kernels' rounding differs between kinds."""
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor())
    amx = "+AMX" if " amx_tile" in info else ""
    return f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}{amx} {model}"


def accelerators() -> str:
    import torch

    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return ", ".join(f"{names.count(name)} x {name}" for name in dict.fromkeys(names)) or "CPU only"


def computing_device() -> str:
    """The CPU kind and accelerators of this process, which a run records (`computed_on`): equal specs computed on
    different kinds of CPU or GPU can round differently."""
    return f"{cpu_kind()}; {accelerators()}"


def package_versions(names=PACKAGES) -> dict[str, str]:
    """Installed version of each package (absent ones say so)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_description() -> dict[str, str]:
    import torch

    return {"cpu": cpu_kind(), "cores": str(os.cpu_count()), "torch threads": str(torch.get_num_threads()),
            "accelerator": accelerators(),
            "python": platform.python_version(), "system": platform.platform()}
