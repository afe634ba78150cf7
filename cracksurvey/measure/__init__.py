"""Measure stage: what is measured on the detected cracks.

- :mod:`~cracksurvey.measure.width`: crack width at skeleton pixels, from the crack-body map;
- :mod:`~cracksurvey.measure.cracks`: length, width, orientation and confidence of every crack
  and branch (the attribute tables of the crack layers);
- :mod:`~cracksurvey.measure.continuity`: crack pattern continuity without ground truth (CPP,
  fragments per metre, largest-crack share).

Production code only: the ground-truth metrics are in :mod:`cracksurvey.evaluation`.
"""
