"""The cell-model protocol: what the likelihood and the fit need of a model of the data's cells.

Two classes follow it: :class:`~nuker_mge_plugin.dynamics.visibilities.GriddedModel` (the
Kaiser-Bessel gridded visibility cells of an interferometer observation) and
:class:`~nuker_mge_plugin.image.fourier.BeamFourierCells` (the Fourier modes of a cleaned image
cube). A third kind of data needs only these members to be fitted by the same pipeline.
"""

from typing import Protocol, runtime_checkable

__all__ = ["CellModel"]


@runtime_checkable
class CellModel(Protocol):
    """A linear map from model sky cubes to the data's complex cells, with the data and noise of the cells.

    Attributes
    ----------
    vis : torch.Tensor, (n_cells,) complex
        The data's cells [Jy] (visibility cells, or Fourier modes of the image cube).
    sigma : torch.Tensor, (n_cells,) real
        Noise of each cell, per real and imaginary part [Jy].
    n_eff : torch.Tensor, (n_cells,) real
        Effective number of samples behind each cell (the Student-t likelihood's degrees of freedom).
    n_cells : int
        Usable cells, all channels together.
    n_chan : int
        Channels.
    report : dict
        What the cells were built from (counts, grid, beam), for the fit's log and summary.
    """

    vis: object
    sigma: object
    n_eff: object
    n_cells: int
    n_chan: int
    report: dict

    def __call__(self, cube):
        """Complex model (B, n_cells) [Jy] of sky cubes ``cube`` (B, n_x, n_y, n_chan) [Jy/pixel]."""

    def to(self, *args, **kwargs):
        """The cells on another device or in another dtype (``torch.nn.Module.to``)."""
