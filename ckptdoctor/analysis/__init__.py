"""Format-free analysis: diagnosis of BN layers and cross-references, tensor statistics, the pooled-moments
estimator, staleness and the repair's output check. Works on arrays and descriptions, never on files."""
