"""densevlm_d2: DenseVLM region-language alignment for CLIP ViTs as a detectron2 extension."""

from setuptools import find_packages, setup

setup(
    name="densevlm_d2",
    version="0.1.0",
    description="DenseVLM region-language alignment for CLIP ViTs, as a detectron2 extension",
    packages=find_packages(
        exclude=(
            "tests",
            "tests.*",
            "tools",
            "configs",
            "datasets",
            "demo",
            "demo.*",
            "app",
            "app.*",
        )
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
        "scipy",  # the segment under a point (densevlm_d2.predictor); PASCAL-Context's .mat files
    ],
    # parts of detectron2 (its Visualizer, some transforms) import OpenCV; densevlm_d2's own drawing
    # (densevlm_d2.visualization) needs only Pillow
    extras_require={
        "vis": ["opencv-python-headless"],
        "prepare": ["scipy"],
        # the interactive app (app/, `make app`); the library never imports it
        "app": ["gradio>=6.0,<7"],
    },
)
