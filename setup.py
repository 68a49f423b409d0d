"""Package metadata for autosr.

Every stage is a subpackage of `autosr/` (the order they may import each other in is the contract in
.importlinter, drawn in documentation/architecture.md), so `find_packages` lists them all.
"""

from setuptools import find_packages, setup

setup(
    name="autosr",
    version="0.1.0",
    description="Self-configuring paired image-to-image translation (super-resolution, contrast and "
    "field-strength synthesis) for 3D medical volumes",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["autosr", "autosr.*"]),
    # the report's viewer: NiiVue's single-file build and the licences it ships under (documentation/evaluation.md)
    package_data={"autosr.evaluation": ["viewer_assets/niivue.umd.js", "viewer_assets/LICENSES.txt"]},
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
        # pybids and the BIDS validator (a PyPI wheel that runs offline) so the tests of `predict --bids` run in CI
        "test": [
            "pytest>=7",
            "ruff==0.17.6",
            "scikit-image>=0.21",
            "import-linter>=2.1",
            "pybids>=0.16",
            "bids-validator-deno>=2.0",
        ],
        "demo": ["nilearn>=0.10"],
        "bids": ["pybids>=0.16"],  # `autosr predict --bids` (documentation/bids.md)
    },
    entry_points={"console_scripts": ["autosr=autosr.cli:main"]},
)
