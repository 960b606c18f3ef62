"""What the pipelines return (``results``), rendered as tables and JSON and stored as HDF5."""
