"""File input/output: the only package of cracksurvey that opens files.

Stage modules are pure (arrays, ``affine.Affine``, CRS, GeoDataFrames); the modules here read
and write survey directories, rasters and layers and hand plain values to them.

- :mod:`cracksurvey.io.survey_files`: survey.yaml, config presets, images.csv, buildings layer,
  image headers and sidecars (world files, .prj), file hashes.
- :mod:`cracksurvey.io.raster`: raster headers, windowed reads of input images.
- :mod:`cracksurvey.io.cog`: Cloud-Optimized GeoTIFF output, window by window.
- :mod:`cracksurvey.io.vector`: the GeoPackage layers; :mod:`cracksurvey.io.styles` and
  :mod:`cracksurvey.io.style_xml`: their QGIS styles.
- :mod:`cracksurvey.io.outputs`: the output folder, run.json, summary tables.
- :mod:`cracksurvey.io.cache`: the stage cache of a run (predictions, results).
- :mod:`cracksurvey.io.lock`: the output folder's lock (one run at a time).
"""
