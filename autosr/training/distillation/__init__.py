"""Distillation: one student network trained on the fold ensemble's predictions (`autosr distill`).

api.py is the stage as a notebook calls it; teacher.py caches the ensemble's predictions; student.py is the
student's trainer (the default loop, another data folder, optionally a narrower network)."""
