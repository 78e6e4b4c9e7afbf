"""The napari plugin: the dock widget, its panels and workers, the Labels writer and sample data.

The only part of the package that imports napari, Qt or magicgui; it holds no model logic and
drives the core (``napari_clipseg.segmentation.pipeline``) like any other caller.
"""
