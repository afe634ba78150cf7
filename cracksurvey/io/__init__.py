"""File input/output: the only package of cracksurvey that opens files.

Stage modules are pure (arrays, ``affine.Affine``, CRS, GeoDataFrames); the modules here read
and write survey directories, rasters and layers and hand plain values to them.

- :mod:`cracksurvey.io.survey_files`: survey.yaml, config presets, images.csv, buildings layer,
  image headers and sidecars (world files, .prj), file hashes.
- :mod:`cracksurvey.io.raster`: windowed reads of input images, tiled COG output.
"""
