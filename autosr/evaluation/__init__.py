"""Evaluation: image metrics, tissue-segmentation agreement, the no-learning baseline, folder and
cross-validation scoring, ranking of configurations, and the offline HTML report.

Definitions, references and every default are written down in documentation/evaluation.md.
"""
