"""fer-keras: facial-expression recognition in Keras 3 with the papers' own protocols."""

__version__ = "0.1.0"
