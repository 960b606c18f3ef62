"""TF1 checkpoints with their MetaGraphDef (``.meta``)."""
