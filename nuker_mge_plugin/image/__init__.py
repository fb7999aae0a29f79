"""Image-plane fitting of cleaned FITS data cubes: the reader (cube.py) and the Fourier-domain
likelihood cells (fourier.py)."""

from .cube import ImageCube, image_cube_grid, is_image_cube, read_image_cube
from .fourier import DEFAULT_THRESHOLD, BeamFourierCells, beam_image

__all__ = ["ImageCube", "read_image_cube", "is_image_cube", "image_cube_grid", "BeamFourierCells", "beam_image",
           "DEFAULT_THRESHOLD"]
