"""TF2 object-based checkpoints (``tf.train.Checkpoint``, ``CheckpointManager``): no graph, an object graph."""
