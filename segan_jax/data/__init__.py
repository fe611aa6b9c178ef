"""Data sources (synthetic, folders, TFDS) and input pipelines (tf.data, numpy)."""
