"""Writing model packages: one zip with everything a trained model needs to predict on another machine.

`export_model` (autosr/packaging/export.py) writes the zip from a model folder, with its model card
(model_card.py). Reading a package (`install_model`, `open_model_package`, the archive checks) is a format
that prediction needs too, so it lives below prediction in autosr/formats/ (package_reader.py,
package_archive.py, package_manifest.py); `autosr.packaging.install`, `.archive` and `.manifest` re-export it.
The layout is in documentation/model_packages.md.
"""
