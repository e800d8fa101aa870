"""densevlm_d2: DenseVLM region-language alignment for CLIP ViTs as a detectron2 extension."""

from setuptools import find_packages, setup

setup(
    name="densevlm_d2",
    version="0.1.0",
    description="DenseVLM region-language alignment for CLIP ViTs, as a detectron2 extension",
    packages=find_packages(
        exclude=("tests", "tests.*", "tools", "configs", "datasets", "demo", "demo.*")
    ),
    package_data={
        "densevlm_d2": [
            "clip/model_configs/*.json",
            "assets/*",
            "data/vocabularies/*.json",
        ]
    },
    python_requires=">=3.10",
    # detectron2 and panopticapi are not on PyPI: tools/install_extras.py installs them (see
    # README).
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "open_clip_torch==3.3.0",
        "timm>=1.0.15,<1.1",
        "huggingface_hub",
        "safetensors",
        "fvcore",
        "pycocotools",
        "shapely",  # fvcore crops instance polygons with it (OV-LVIS large-scale jitter)
        "numpy",
        "Pillow",
    ],
    # drawing predictions (densevlm_d2.visualization, tools/predict.py, the demo's figures) uses
    # detectron2's Visualizer, which imports OpenCV
    # datasets/prepare_pascal_context.py reads PASCAL-Context's .mat annotations with scipy
    extras_require={"vis": ["opencv-python-headless"], "prepare": ["scipy"]},
)
