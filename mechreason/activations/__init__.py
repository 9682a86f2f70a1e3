"""Activation capture (stage 2); see :mod:`mechreason.activations.run`."""
