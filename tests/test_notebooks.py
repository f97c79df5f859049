"""The notebooks' shared structure: header, identical setup cell, short cells, checked fingerprints."""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _source(cell):
    return "".join(cell["source"])


def test_the_six_numbered_notebooks_exist():
    assert [p.name[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05"]


def test_notebook_05s_settings_are_one_cell_tagged_for_papermill():
    cells = _cells(NOTEBOOKS[5])
    tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is cells[3]
    for name in ("MODEL", "IMAGES", "CLASS_NAMES", "PREPROCESS", "EXPLAIN", "CUSTOM_OBJECTS"):
        assert re.search(rf"^{name} = ", _source(tagged[0]), re.M), name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_header_badge_and_identical_setup_cell(path):
    cells = _cells(path)
    header = _source(cells[0])
    assert cells[0]["cell_type"] == "markdown" and header.startswith("# ")
    assert "colab.research.google.com/github/" in header and header.rstrip().endswith(f"notebooks/{path.name})")
    assert _source(cells[1]) == _source(_cells(NOTEBOOKS[0])[1])
    assert "import helpers" in _source(cells[1])


def _setup_defaults():
    setup = _source(_cells(NOTEBOOKS[0])[1])
    url = re.search(r'"CNNVIS_REPO_URL", "([^"]+)"', setup).group(1)
    ref = re.search(r'"CNNVIS_REPO_REF", "([^"]+)"', setup).group(1)
    return url, ref


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_badge_opens_the_repository_and_ref_the_setup_cell_clones(path):
    url, ref = _setup_defaults()
    owner_repo = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(\.git)?", url).group(1)
    badge = f"https://colab.research.google.com/github/{owner_repo}/blob/{ref}/notebooks/{path.name}"
    assert badge in _source(_cells(path)[0])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_header_says_where_stored_outputs_come_from_and_the_end_flushes_drive(path):
    cells = _cells(path)
    assert "*Stored outputs: one top-to-bottom run in quick mode" in _source(cells[0])
    assert _source(cells[-1]) == "print(helpers.flush_drive())"


MACHINE_PATH = re.compile(r"/(tmp|work|root|home|Users)/[A-Za-z0-9_.-]+")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_show_no_path_of_the_machine_that_made_them(path):
    texts = []
    for cell in _cells(path):
        for output in cell.get("outputs", []):
            texts.append("".join(output.get("text", "")))
            texts += ["".join(v) for k, v in output.get("data", {}).items() if k.startswith("text/")]
            texts += output.get("traceback", [])
    leaks = [m.group(0) for text in texts for m in MACHINE_PATH.finditer(text)]
    assert not leaks, f"{path.name} outputs show {leaks[:3]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_are_short_and_fingerprints_are_checked(path):
    code = [_source(c) for c in _cells(path)[2:] if c["cell_type"] == "code"]
    assert all(len(src.splitlines()) <= 12 for src in code), "keep logic in helpers.py"
    assert any(src.startswith("# NBVAL_CHECK_OUTPUT") for src in code)
    assert not any(re.search(r"^\s*(def|class)\s", src, re.M) for src in code), "functions belong in helpers.py"


PURE_HELPERS = {"quick_or_full", "pattern_grid", "keras3_resnet_name", "frame_contrast", "tile_channels"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_checked_cells_only_print_what_earlier_cells_computed(path):
    """TensorFlow's runtime messages land in whichever cell is running; a checked cell that runs
    models would compare them too. Checked cells may call only pure helpers."""
    for cell in _cells(path):
        src = _source(cell)
        if cell["cell_type"] == "code" and src.startswith("# NBVAL_CHECK_OUTPUT"):
            called = set(re.findall(r"helpers\.(\w+)", src))
            assert called <= PURE_HELPERS, f"{path.name}: checked cell computes with {called - PURE_HELPERS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_carry_no_widget_state_or_tensorflow_banners(path):
    """Saved widget state (megabytes of stale PNGs that JupyterLab would show as dead widgets) and
    TensorFlow's start-up lines have no place in the committed notebooks."""
    notebook = json.loads(path.read_text())
    assert "widgets" not in notebook["metadata"], "refresh with --ExecutePreprocessor.store_widget_state=False"
    stderr = ["".join(o.get("text", "")) for c in notebook["cells"] if c["cell_type"] == "code"
              for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not [text for text in stderr if "absl::InitializeLog" in text or "oneDNN custom operations" in text
                or "failed call to cuInit" in text]


TEACHING = "# TEACHING CELL"
MATHS = re.compile(r"GradientTape|\.reshape\(|\.transpose\(|tf\.einsum|import tensorflow")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_maths_is_written_out_only_in_marked_teaching_cells_each_checked_by_the_next(path):
    """Issue 10: notebooks 02-04 write their core computation out (tiling, a gradient-ascent step,
    Grad-CAM) in marked teaching cells; every other cell calls helpers. Each teaching cell is
    followed by a checked cell, so a teaching cell that drifts from the helper fails CI."""
    code = [(i, _source(c)) for i, c in enumerate(_cells(path)) if c["cell_type"] == "code"][1:]
    teaching = [k for k, (_, src) in enumerate(code) if src.startswith(TEACHING)]
    for _, src in code:
        assert src.startswith(TEACHING) or not MATHS.search(src), f"{path.name}: unmarked maths in\n{src}"
    for k in teaching:
        assert code[k + 1][1].startswith("# NBVAL_CHECK_OUTPUT"), f"{path.name}: teaching cell {code[k][0]} is not checked"
    assert bool(teaching) == (path.name[:2] in ("02", "03", "04"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_cells_read_as_sentences(path):
    """One heading per markdown cell, at its top; the quick-mode settings in one code cell; numpy
    imported by the notebook, not borrowed from helpers."""
    cells = _cells(path)
    for cell in cells:
        if cell["cell_type"] == "markdown":
            headings = [k for k, line in enumerate(_source(cell).splitlines()) if re.match(r"#+ ", line)]
            assert headings in ([], [0]), f"{path.name}: {_source(cell)[:80]!r}"
    quick = [c for c in cells if c["cell_type"] == "code" and "quick_or_full" in _source(c)]
    assert len(quick) <= 1, f"{path.name}: quick-mode settings spread over {len(quick)} cells"
    assert all("helpers.np" not in _source(c) for c in cells)
    assert "import numpy as np" in _source(cells[1]) and "helpers.inline_figures()" in _source(cells[1])
