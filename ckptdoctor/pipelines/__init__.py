"""The pipelines, each written once for every format: inspect, repair, diff."""
