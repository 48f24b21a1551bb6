"""Adapters from raw FER datasets to TFRecords; dlib faces; optical flow."""
