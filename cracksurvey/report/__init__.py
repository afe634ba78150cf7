"""Damage reports: ``report.html`` per survey and city-wide (indicative, not structural).

A report is one self-contained HTML file (inline CSS and SVG, thumbnails as ``data:`` URIs, no
JavaScript, a Content-Security-Policy that forbids any fetch): it opens from a USB stick and
prints. It reads the survey outputs back from disk, so its numbers are those of the
GeoPackage's ``buildings`` layer and ``summary.csv``.

Modules: :mod:`~cracksurvey.report.load` (reading outputs and thumbnails, the IO edge),
:mod:`~cracksurvey.report.figures` (SVG figures), :mod:`~cracksurvey.report.html` (the page),
:mod:`~cracksurvey.report.build` (the survey tool) and :mod:`~cracksurvey.report.city` (the
city-wide tool).
"""

from cracksurvey.io.outputs import REPORT_HTML

from .build import ReportOptions, write_survey_report
from .city import CityReport, write_city_report

__all__ = ["REPORT_HTML", "CityReport", "ReportOptions", "write_city_report", "write_survey_report"]
