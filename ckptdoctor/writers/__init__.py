"""Writing outputs: atomic names, and TensorFlow bundles verified before they become visible."""
