"""``inspect --data``: are the stored BN statistics the ones the network computes on this data?

A checkpoint alone cannot show the third cause of the train/inference gap: moving
statistics that were updated, but by an exponential moving average that lags the
weights (few steps, momentum 0.99, a high learning rate). They look healthy: neither
at their initial values nor invalid. With data, ``repair --dry-run`` computes what
they should be (each layer's input moments in training mode), and this module
compares the two.

How far is too far. For each channel, the shift of the mean is measured in units
of the new standard deviation, and the variance as a ratio new/stored. Sampling noise
alone moves the mean by about ``1/sqrt(n)`` sd and the variance by about
``sqrt(2/n)`` (relative) for n elements per channel, so with the minimum of
``MIN_SAMPLES`` samples these stay well under the warning thresholds below. The
thresholds are where a BN layer's inference output visibly departs from its
training output: a shift of 0.2 sd or a variance off by 25 % is a warning; a
shift of 1 sd or a variance off by a factor 2 is an error (the layer's output is
then wrong by about its own spread). Data from another distribution than the
training data shift the statistics too: pass training data (or a sample of it).
"""

from __future__ import annotations

from ckptdoctor.analysis.diagnose import Finding

__all__ = ["STALE_CODE", "stale_findings", "stale_severity"]

STALE_CODE = "bn-stats-stale"
WARN_SHIFT, ERROR_SHIFT = 0.2, 1.0  # max |new mean - stored mean| / new sd
WARN_RATIO, ERROR_RATIO = 1.25, 2.0  # variance new/stored, or its inverse
MIN_SAMPLES = 32


def stale_severity(layer) -> str | None:
    """``error``, ``warning`` or None (close enough) for one layer's mean shift and variance ratios."""
    shift = layer.max_mean_shift or 0.0
    lo, hi = layer.var_ratio_min, layer.var_ratio_max
    worst_ratio = max(hi or 1.0, 1.0 / lo if lo else 1.0)
    if shift > ERROR_SHIFT or worst_ratio > ERROR_RATIO:
        return "error"
    if shift > WARN_SHIFT or worst_ratio > WARN_RATIO:
        return "warning"
    return None


def stale_findings(repair_report) -> tuple[list[Finding], list[str]]:
    """``bn-stats-stale`` findings from a dry-run repair, and notes on how they were judged.

    Only layers whose stored statistics looked healthy (status ``ok``) are judged:
    missing, at-init and invalid ones already have findings of their own.
    """
    n = repair_report.samples
    if n < MIN_SAMPLES:
        return [], [f"staleness not judged: {n} samples are too few (at least {MIN_SAMPLES})"]
    findings = []
    for layer in repair_report.layers:
        if layer.status_before != "ok":
            continue
        severity = stale_severity(layer)
        if severity is None:
            continue
        findings.append(
            Finding(
                STALE_CODE,
                severity,
                layer.layer,
                layer.moving_mean,
                f"BN layer {layer.layer}'s stored statistics do not match what it computes on {repair_report.data}: "
                f"the mean is off by up to {layer.max_mean_shift:.3g} sd and the variance by a factor "
                f"{layer.var_ratio_min:.3g}..{layer.var_ratio_max:.3g} (new/stored, {n} samples, training mode), so "
                "inference-mode outputs differ from training-mode ones; they lag the weights (too few steps for "
                f"the momentum): run `ckptdoctor repair` with --data {repair_report.data}",
            )
        )
    note = (
        f"BN statistics checked against {n} samples of {repair_report.data} (repair --dry-run, method "
        f"{repair_report.method}, batch size {repair_report.batch_size}): stale above a mean shift of "
        f"{WARN_SHIFT} sd or a variance ratio beyond {WARN_RATIO} (errors: {ERROR_SHIFT} sd, {ERROR_RATIO})"
    )
    return findings, [note]
