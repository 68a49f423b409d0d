"""The files stages hand to each other, read and written in one place each: a raw dataset's dataset.json and
case layout (`dataset_spec`), plans.json (`plans`), splits.json (`splits`), and a model package
(`package_manifest`, `package_archive`, `package_reader`). Every stage above reads these; none of them
knows a stage.
"""
