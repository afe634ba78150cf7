"""Evaluation against ground truth: labelled datasets, metrics and ``cracksurvey evaluate``.

Kept apart from production: nothing that ``cracksurvey process`` runs imports this package
(a test says so). Production continuity measures (CPP, fragments per metre) are in
:mod:`cracksurvey.measure.continuity`; the metrics here compare a prediction with a ground
truth (docs/method.md, "Metrics").
"""
