"""Running models: loading a Keras model and measuring its BN layers' inputs."""
