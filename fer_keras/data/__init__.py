"""SynthFER, the TFRecord schema, the tf.data pipeline and subject-independent splits."""
