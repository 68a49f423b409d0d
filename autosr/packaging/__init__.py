"""Model packages: one zip with everything a trained model needs to predict on another machine.

`export_model` (autosr/packaging/export.py) writes the zip from a model folder; `install_model` and
`open_model_package` (autosr/packaging/install.py) put it under `$AUTOSR_RESULTS` or unpack it for one
prediction run. Every archive is checked member by member before anything is written
(autosr/packaging/archive.py). The layout is in documentation/model_packages.md.
"""
