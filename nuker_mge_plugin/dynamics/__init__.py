"""Differentiable torch dynamics: MGE circular velocity, gas cube, visibilities."""
