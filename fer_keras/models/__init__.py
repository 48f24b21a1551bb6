"""Model builders, registered by name in `fer_keras.models.registry`."""
