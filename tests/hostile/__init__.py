"""The hostile-input tests and fuzz targets; a package so its tests import census.py and replay.py
relatively (`from .census import ...`) rather than by a sys.path edit."""
