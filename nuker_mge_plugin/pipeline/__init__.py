"""The fit as a user runs it (``nuker-mge fit``): the configuration file, the fit itself (data ->
MAP -> Fisher matrix -> sampler), its results, products and figures.

It sits on top: it wires :mod:`nuker_mge_plugin.model` (the physics), :mod:`nuker_mge_plugin.inference`
(parameters, priors, MAP, Fisher matrix) and :mod:`nuker_mge_plugin.sampling` (model-free MCMC)
together; nothing below imports it.
"""
