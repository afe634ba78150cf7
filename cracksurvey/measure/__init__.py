"""Measurements on the image itself, at positions the skeleton stage found."""
