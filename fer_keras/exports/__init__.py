"""SavedModel and TFLite/LiteRT export."""
