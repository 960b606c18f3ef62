"""Keras files: ``.keras`` archives, full legacy ``.h5`` and ``.weights.h5``."""
