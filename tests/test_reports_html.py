"""``--report FILE.html``: one self-contained page per inspect or repair, read back as HTML and rendered by Chromium.

The pages are written by the real CLI from real checkpoints: the bundled seed samples (TF1 graphs: statistics
missing, stale) and a Keras 3 residual net with 17 BN layers (``report_builders.py``: stored in another order
than they run, one layer at its initial statistics, every other one lagging). Each page is parsed with
``html.parser``: its charts are inline ``<svg>`` elements naming every BN layer, and nothing in it points
outside the page. Headless Chromium (Debian's ``chromium``; the ``chromium`` fixture finds it or installs it
with apt-get) renders each page to a PNG that is checked not to be blank.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import h5py
import pytest
from conftest import SAMPLES, assert_one_line_error, run_cli
from report_builders import AT_INIT, BLOCKS, bn_names

SEED_LAYERS = ["batch_normalization", "batch_normalization_1", "batch_normalization_2"]
RESNET_LAYERS = bn_names(BLOCKS)  # in the order they run: stem_bn, block1_bn1, ..., block10_bn2
BY_NAME = [f"block{b}_bn{i}" for b in range(1, BLOCKS + 1) for i in (1, 2)] + ["stem_bn"]


class Page(HTMLParser):
    """What a report page holds: its ``<svg>`` charts (the text of each), the text outside them, every attribute."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.svgs: list[list[str]] = []
        self.text: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self._depth = 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag == "svg":
            self.svgs.append([])
            self._depth += 1

    def handle_endtag(self, tag):
        if tag == "svg":
            self._depth -= 1

    def handle_data(self, data):
        (self.svgs[-1] if self._depth else self.text).append(data)

    def svg_text(self, i: int) -> str:
        return "\n".join(self.svgs[i])


def read_page(path) -> tuple[str, Page]:
    text = Path(path).read_text(encoding="utf-8")
    return text, Page(text)


def assert_self_contained(text: str, page: Page) -> None:
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "http://" not in text and "https://" not in text
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    refs = [(tag, k, v) for tag, k, v in page.attrs if k in ("src", "href", "xlink:href") and not v.startswith("#")]
    assert refs == []
    assert "@import" not in text and "url(" not in text


def rows_order(svg_text: str, names: list[str]) -> list[str]:
    """The layer names in the order a chart's row labels name them (each row label is its own text line)."""
    lines = svg_text.splitlines()
    return [line for line in lines if line in names][::2]  # each row: the <title> then the label


# --------------------------------------------------------------------------------------------- inspect


def test_inspect_html_of_missing_statistics(tmp_path):
    out = tmp_path / "seed-trainables.html"
    proc = run_cli("inspect", SAMPLES / "seed-trainables", "--report", out)
    assert proc.returncode == 1 and f"report written to {out}" in proc.stderr
    text, page = read_page(out)
    assert_self_contained(text, page)
    assert len(page.svgs) == 1  # the stored statistics; no data, no second chart
    chart = page.svg_text(0)
    for layer in SEED_LAYERS:
        assert layer in chart
    assert chart.count("moving mean not stored") == 3 and chart.count("moving variance not stored") == 3
    body = "\n".join(page.text)
    # The findings grouped by code, the Saver advice said once (the six messages each end with it).
    assert body.count("save with a Saver over all global variables") == 1
    for layer in SEED_LAYERS:
        assert f"{layer}/moving_mean" in body and f"{layer}/moving_variance" in body
    assert "6 errors, 0 warnings: exit code 1" in body


def test_inspect_html_charts_every_layer_of_a_21_layer_net(resnet_keras, tmp_path):
    out = tmp_path / "resnet.html"
    proc = run_cli("inspect", resnet_keras / "model.keras", "--report", out, "--format", "json")
    assert proc.returncode == 1  # the layer at its initial statistics
    doc = json.loads(proc.stdout)
    text, page = read_page(out)
    assert_self_contained(text, page)
    assert len(page.svgs) == 1
    chart = page.svg_text(0)
    assert set(rows_order(chart, RESNET_LAYERS)) == set(RESNET_LAYERS)
    # Without data the network's order is unknown: by name, numbers as numbers (block2 before block10).
    assert rows_order(chart, RESNET_LAYERS) == BY_NAME
    assert "at-init" in chart and "Moving variance, per channel" in chart and "Moving mean, per channel" in chart
    assert [b["layer"] for b in doc["bn_layers"] if b["status"] == "at-init"] == [AT_INIT]
    body = "\n".join(page.text)
    assert "bn-stats-at-init" in body and f"{len(doc['tensors'])} tensors" in body


@pytest.fixture(scope="module")
def with_data(resnet_keras, tmp_path_factory):
    """``inspect --data --report page.html --format json`` on the residual net: (page, JSON document)."""
    out = tmp_path_factory.mktemp("with-data") / "resnet-data.html"
    x = resnet_keras / "X.npy"
    proc = run_cli("inspect", resnet_keras / "model.keras", "--data", x, "--report", out, "--format", "json")
    assert proc.returncode == 1, proc.stderr
    return out, json.loads(proc.stdout)


def test_inspect_html_with_data_shows_the_stale_measures_in_network_order(with_data):
    out, doc = with_data
    text, page = read_page(out)
    assert_self_contained(text, page)
    assert len(page.svgs) == 2  # against the data (first: which layers are off, by how much), stored statistics
    for i in range(2):
        assert rows_order(page.svg_text(i), RESNET_LAYERS) == RESNET_LAYERS  # the order they run in
    data_chart = page.svg_text(0)
    assert "Mean shift, per channel (sd)" in data_chart and "Variance ratio new / stored, per channel" in data_chart
    stale = [f for f in doc["findings"] if f["code"] == "bn-stats-stale"]
    assert len(stale) == len(RESNET_LAYERS) - 1  # every layer but the one at init lags
    body = "\n".join(page.text)
    assert "Against the data" in body and "256 samples" in body
    # The advice of the 20 stale findings (errors and warnings) is said once.
    assert body.count("run `ckptdoctor repair` with --data") == 1


def test_existing_html_report_needs_force_and_h5_stays_hdf5(tmp_path):
    ckpt = [SAMPLES / "seed-no-update", "--graph", "False"]  # BN layers by name: no TensorFlow, fast
    out = tmp_path / "r.HTML"  # the extension in any case
    assert run_cli("inspect", *ckpt, "--report", out).returncode == 1
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    before = out.read_bytes()
    assert_one_line_error(run_cli("inspect", *ckpt, "--report", out), "--force")
    assert out.read_bytes() == before
    assert run_cli("inspect", *ckpt, "--report", out, "--force").returncode == 1
    h5 = tmp_path / "r.h5"
    assert run_cli("inspect", *ckpt, "--report", h5).returncode == 1
    with h5py.File(h5, "r") as f:
        assert f.attrs["kind"] == "ckptdoctor-inspect" and f["bn_layers"].shape == (3,)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".ckptdoctor-tmp-")]


def test_a_network_without_bn_gets_a_page_without_charts(tmp_path):
    out = tmp_path / "nobn.html"
    assert run_cli("inspect", SAMPLES / "nobn", "--graph", "False", "--report", out).returncode == 0
    text, page = read_page(out)
    assert_self_contained(text, page)
    assert page.svgs == [] and "No BN layer." in "\n".join(page.text)


def test_the_self_containment_check_refuses_outside_references():
    from ckptdoctor.errors import CkptDoctorError
    from ckptdoctor.reports.html import check_html

    assert check_html("<!DOCTYPE html><html><body><svg></svg><a href='#x'>x</a></body></html>") == 1
    for bad in (
        '<img src="https://example.org/x.png">',
        '<link rel="stylesheet" href="style.css">',
        "<script>alert(1)</script>",
        "<style>@import 'x.css';</style>",
        '<div style="background: url(x.png)"></div>',
    ):
        with pytest.raises(CkptDoctorError, match="not self-contained"):
            check_html(bad)


# --------------------------------------------------------------------------------------------- repair


def test_repair_html_of_the_seed(tmp_path):
    out = tmp_path / "repair.html"
    proc = run_cli(
        "repair",
        SAMPLES / "seed",
        "--data",
        SAMPLES / "seed" / "X.npy",
        "--batch-size",
        "1000",
        "--output",
        tmp_path / "fixed",
        "--report",
        out,
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    text, page = read_page(out)
    assert_self_contained(text, page)
    assert len(page.svgs) == 1
    chart = page.svg_text(0)
    assert rows_order(chart, SEED_LAYERS) == SEED_LAYERS
    for title in ("Mean shift, per channel (sd)", "Variance ratio new / stored", "Inference-vs-training gap"):
        assert title in chart
    # Each layer's gap before and after, as the JSON has them, in the rows' tooltips.
    for layer in doc["layers"]:
        assert f"before: {layer['gap_before']:.4g}" in chart and f"after: {layer['gap_after']:.4g}" in chart
    body = "\n".join(page.text)
    assert "Repaired: written to" in body and str(tmp_path / "fixed") in body
    assert f"{doc['output_check']['gap_before']:.4g}" in body and "better" in body


def test_repair_html_of_a_keras_net_in_network_order(resnet_keras, tmp_path):
    out = tmp_path / "repair.html"
    proc = run_cli(
        "repair", resnet_keras / "model.keras", "--data", resnet_keras / "X.npy", "--dry-run", "--report", out
    )
    assert proc.returncode == 0, proc.stderr
    text, page = read_page(out)
    assert_self_contained(text, page)
    assert len(page.svgs) == 1
    assert rows_order(page.svg_text(0), RESNET_LAYERS) == RESNET_LAYERS
    assert "Dry run: nothing written" in "\n".join(page.text)
    assert not (resnet_keras / "model-repaired.keras").exists()


# --------------------------------------------------------------------------------------------- a real browser


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path: found on PATH, or installed with apt-get (Debian's ``chromium`` package) when root."""
    path = _find_chromium()
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
        if subprocess.run(install, env=env, capture_output=True, timeout=1200).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=1200)
        path = _find_chromium()
    if path is None:
        pytest.skip("no Chromium to render the HTML reports: apt-get install chromium")
    return path


def render(chromium: str, page: Path, tmp_path: Path) -> Path:
    png = tmp_path / (page.stem + ".png")
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,2400",
        f"--screenshot={png}",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and png.exists(), proc.stderr[-2000:]
    return png


def assert_not_blank(png: Path) -> None:
    from PIL import Image

    with Image.open(png) as im:
        rgb = im.convert("RGB")
    colours = rgb.getcolors(maxcolors=1 << 24)
    assert colours is not None and len(colours) > 1  # a blank page is one colour
    white = sum(n for n, c in colours if c == (255, 255, 255))
    assert white < 0.98 * rgb.width * rgb.height  # text, tables and charts cover part of it
    # The charts' marks are drawn in their own colour (the dark blue of medians and largest values).
    assert sum(n for n, c in colours if c == (0x1B, 0x3A, 0x5C)) > 20


def test_chromium_renders_the_inspect_and_repair_pages(chromium, with_data, tmp_path):
    repair_page = tmp_path / "repair.html"
    proc = run_cli(
        "repair", SAMPLES / "seed", "--data", SAMPLES / "seed" / "X.npy", "--dry-run", "--report", repair_page
    )
    assert proc.returncode == 0, proc.stderr
    for page in (with_data[0], repair_page):
        assert_not_blank(render(chromium, page, tmp_path))
