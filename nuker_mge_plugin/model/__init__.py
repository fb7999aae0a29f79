"""The physical model of the data: the Nuker disc (stars + black hole + gas -> model cells) and
the likelihoods of the gridded cells.

``forward``: :class:`~nuker_mge_plugin.model.forward.NukerDiscModel`, parameters -> MGE ->
circular velocity -> gas cube -> cell model; ``cells``: the :class:`CellModel` protocol both cell
models (visibility cells, Fourier modes of an image cube) follow; ``likelihood``: the Gaussian and
Student-t likelihoods of the cells. It builds on :mod:`nuker_mge_plugin.dynamics` and is used by
:mod:`nuker_mge_plugin.pipeline`.
"""
