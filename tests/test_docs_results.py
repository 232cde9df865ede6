"""The result tables of README.md, docs/benchmarks.md and docs/inference.md are their JSONs: every generated block
(``<!-- results:NAME -->``) is exactly what ``tools/render_docs.py`` renders from
docs/benchmarks/*.json, and every JSON there says where it comes from (``provenance``)."""

from __future__ import annotations

import importlib
import json
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def rr(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tools"))
    return importlib.import_module("render_docs")


@pytest.fixture
def copy(tmp_path, rr):
    """The rendered docs (README, docs/benchmarks.md, ...) and the JSONs in a scratch checkout."""
    (tmp_path / "docs").mkdir()
    for doc in rr.DOCS:
        shutil.copy(REPO / doc, tmp_path / doc)
    shutil.copytree(
        REPO / "docs" / "benchmarks", tmp_path / "docs" / "benchmarks", ignore=shutil.ignore_patterns("*.png")
    )
    return tmp_path


def test_every_generated_table_equals_its_json(rr, capsys):
    assert rr.main(["--check"]) == 0, capsys.readouterr().err
    from transvae.utils.markdown import find_blocks

    names = [n for doc in rr.DOCS for n in find_blocks((REPO / doc).read_text())]
    assert sorted(names) == sorted(rr.BLOCKS)  # every renderer is used, each block once


def test_a_number_edited_by_hand_fails_the_check(rr, copy, capsys):
    doc = copy / "docs" / "benchmarks.md"
    text = doc.read_text()
    block = re.search(r"<!-- results:learning-efficiency-f16-128 -->\n(.*?)<!-- /results -->", text, re.S)
    edited = block[1].replace("18.91 ± 0.30", "19.91 ± 0.30", 1)
    assert edited != block[1]
    doc.write_text(text.replace(block[1], edited))
    assert rr.main(["--check", "--root", str(copy)]) == 1
    assert "docs/benchmarks.md: learning-efficiency-f16-128" in capsys.readouterr().err
    assert rr.main(["--root", str(copy)]) == 0 and doc.read_text() == text  # rendering restores it


def test_a_changed_json_makes_its_table_stale(rr, copy, capsys):
    path = copy / "docs" / "benchmarks" / "scaling.json"
    d = json.loads(path.read_text())
    d["results"][0]["psnr"] = (
        99.0 if not isinstance(d["results"][0]["psnr"], dict) else dict(d["results"][0]["psnr"], mean=99.0)
    )
    path.write_text(json.dumps(d))
    assert rr.main(["--check", "--root", str(copy)]) == 1
    assert rr.main(["--root", str(copy)]) == 0 and "99.00" in (copy / "docs" / "benchmarks.md").read_text()


def test_a_result_from_a_dirty_tree_says_so(rr, copy):
    path = copy / "docs" / "benchmarks" / "scaling.json"
    d = json.loads(path.read_text())
    d["provenance"].update(
        recorded_after=False, git={"commit": "0123456789abcdef" * 2 + "01234567", "dirty": True}
    )
    path.write_text(json.dumps(d))
    assert "(commit 0123456, **dirty tree**;" in rr.scaling(copy)


def test_every_result_json_has_provenance():
    for path in sorted((REPO / "docs" / "benchmarks").glob("*.json")):
        p = json.loads(path.read_text()).get("provenance")
        assert p is not None, path.name
        assert {
            "recorded_after",
            "command",
            "git",
            "versions",
            "machine",
            "seeds",
            "started_at",
            "wall_seconds",
            "steps",
        } <= set(p)
        if p["recorded_after"]:  # reconstructed: says which commit stands in and that dirtiness is unknown
            assert p["git"]["dirty"] is None and "added this file" in p["git"]["note"]
        else:
            assert p["git"].get("commit") or p["git"].get("note")
