"""The project's LICENSE, CITATION.cff and setup.py's license field agree (Apache-2.0) and cite the papers."""

from __future__ import annotations

import ast

import pytest

from tests import REPO_ROOT

PAPERS = {
    "Test-time Alignment of Diffusion Models without Reward Over-optimization": 2025,  # DAS, ICLR 2025
    "Feedback Efficient Online Fine-Tuning of Diffusion Models": 2024,  # SEIKO, ICML 2024
}


def test_citation_cff_parses_and_cites_both_papers():
    yaml = pytest.importorskip("yaml", reason="pyyaml is not installed in .venv")
    cff = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "Apache-2.0"
    assert cff["title"] and cff["authors"] and cff["message"]
    cited = {ref["title"]: ref["year"] for ref in cff["references"]}
    assert cited == PAPERS
    assert all(ref["authors"] for ref in cff["references"])


def test_license_is_the_apache_2_text_with_the_projects_copyright():
    text = (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text and "Copyright 2026 The das-toolkit authors" in text
    assert "[yyyy]" not in text


def test_setup_py_declares_the_license():
    tree = ast.parse((REPO_ROOT / "setup.py").read_text(encoding="utf-8"))
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup"]
    keywords = {kw.arg: kw.value for kw in calls[0].keywords}
    assert ast.literal_eval(keywords["license"]) == "Apache-2.0"
