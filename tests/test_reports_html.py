"""report.html / report.md of a real run, `dnas show` / `dnas compare`, and the
architecture pictures of every installed search space."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from dnas_core import DnasError, GraphEncoding
from dnas_core.report import Section, architecture_figure, is_chain, render_html
from dnas_core.cli import main


def test_report_html_is_self_contained_and_complete(finished_run):
    html = (finished_run / "report.html").read_text(encoding="utf-8")
    md = (finished_run / "report.md").read_text(encoding="utf-8")
    # every figure the Markdown links is a file, and the HTML embeds the same figures
    linked = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", md)
    assert {"plots/architecture.png", "plots/arch_evolution.png", "plots/learning_curves.png",
            "plots/confusion_matrix.png"} <= set(linked)
    for rel in linked:
        assert (finished_run / rel).stat().st_size > 1000
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(srcs) == len(linked)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    # nothing loads from outside the file
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)
    import json

    result = json.loads((finished_run / "result.json").read_text())
    acc = result["test_metrics"]["accuracy"]
    for text in (md, html):
        assert result["genotype"]["text"].replace("|", "\\|") in text or result["genotype"]["text"] in text
        assert f"{acc:.4f}".rstrip("0").rstrip(".") in text
        for heading in ("Searched architecture", "Test metrics", "Architecture weights during search",
                        "Learning curves", "Model", "Wall time per stage", "Manifest"):
            assert heading in text
        assert "verified" in text  # the ONNX check
    # the NAS-Bench-201 plugin's section arrives with its own heading: no empty wrapper above it
    assert "## NAS-Bench-201 table" in md and "From plugins" not in md
    assert "sum of the stages above" in md  # not a "total" that disagrees with result.json


def test_html_escapes_plugin_sections():
    sec = Section("From plugins").md("<script>alert(1)</script> **bold**").p("<b>x</b>")
    out = render_html("t <x>", [sec], {})
    assert "<script>" not in out and "<b>x</b>" not in out
    assert "&lt;script&gt;" in out


def test_every_space_gets_an_architecture_picture(pm):
    rng = np.random.default_rng(0)
    drawn = 0
    for entry in pm.registries.spaces.entries():
        try:
            space = pm.registries.spaces.create(entry.name, {})
            genotype = space.sample(rng)
        except (NotImplementedError, DnasError):  # no default config, or cannot sample
            continue
        fig = architecture_figure(space, genotype)
        assert fig is not None, f"space {entry.name} got no picture"
        drawn += 1
    assert drawn >= 1


def test_chain_encodings_become_layer_diagrams():
    adj = np.eye(4, k=1)
    assert is_chain(adj)
    assert not is_chain(adj + np.eye(4, k=2))

    class ChainSpace:
        name = "chain"

        def encode(self, g):
            return GraphEncoding(adj, np.eye(4, 3, dtype=np.float32), ("conv", "pool", "fc"))

    fig = architecture_figure(ChainSpace(), None)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "0: conv" in texts and "layer diagram" in fig.axes[0].get_title()


def test_show_and_compare(finished_run, tmp_path, capsys, monkeypatch):
    assert main(["show", str(finished_run)]) == 0
    out = capsys.readouterr().out
    assert "status      completed" in out and "genotype" in out and "accuracy=" in out
    other = tmp_path / "copy"
    shutil.copytree(finished_run, other)
    png = tmp_path / "cmp.png"
    assert main(["compare", str(finished_run), str(other), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "mini (run)" in out and "mini (copy)" in out
    assert png.stat().st_size > 1000
    # --json prints the figures and draws nothing unless --plot names a file
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(finished_run), str(other), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) and not (tmp_path / "compare.png").exists()
    assert main(["compare", str(finished_run)]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["show", str(tmp_path)]) == 2
    assert "not a dnas run directory" in capsys.readouterr().err
