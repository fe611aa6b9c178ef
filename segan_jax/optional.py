"""Optional dependencies: TensorFlow (tf.data, TFDS, TF summaries) is used only where installed."""

import functools


@functools.cache
def tensorflow_available() -> bool:
  """True if `import tensorflow` works here."""
  try:
    import tensorflow  # noqa: F401
  except ImportError:
    return False
  return True
