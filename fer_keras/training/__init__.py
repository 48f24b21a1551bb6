"""Losses, optimizers, callbacks and fit loops."""
