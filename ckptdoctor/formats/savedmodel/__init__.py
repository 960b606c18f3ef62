"""SavedModel directories: the ``variables/`` bundle with ``saved_model.pb`` (and ``keras_metadata.pb``)."""
