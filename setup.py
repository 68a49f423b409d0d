"""Package metadata for autosr.

`planning/` and `dataset_conversion/` sit at the top of the repository because they are pipeline stages a
reader should see at a glance; `package_dir` installs them as `autosr.planning` and
`autosr.dataset_conversion` so nothing called `planning` lands at the top of site-packages.
"""

from setuptools import setup

PACKAGES = [
    "autosr",
    "autosr.io",
    "autosr.dataset",
    "autosr.preprocessing",
    "autosr.network",
    "autosr.training",
    "autosr.training.adversarial",
    "autosr.training.diffusion",
    "autosr.inference",
    "autosr.evaluation",
    "autosr.registration",
    "autosr.packaging",
    "autosr.planning",
    "autosr.dataset_conversion",
]

setup(
    name="autosr",
    version="0.1.0",
    description="Self-configuring paired image-to-image translation (super-resolution, contrast and "
    "field-strength synthesis) for 3D medical volumes",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir={
        "autosr.planning": "planning",
        "autosr.dataset_conversion": "dataset_conversion",
    },
    install_requires=[
        "torch>=2.1",
        "SimpleITK>=2.2",
        "batchgenerators>=0.25",
        "batchgeneratorsv2>=0.2",
        "numpy>=1.24",
        "scipy>=1.10",
        "pandas>=2.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "test": ["pytest>=7", "ruff==0.17.6", "scikit-image>=0.21"],
        "demo": ["nilearn>=0.10"],
    },
    entry_points={"console_scripts": ["autosr=autosr.cli:main"]},
)
