"""Metrics, protocols, majority vote, reports and plots."""
