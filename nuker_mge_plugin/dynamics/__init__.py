"""Differentiable torch dynamics: MGE circular velocity, gas cube, visibilities."""

from .vcirc import G_KMS2_PC_PER_MSUN, vcirc, vcirc_qintr  # noqa: F401
