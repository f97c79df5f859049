"""The notebooks' requirements must be met by what Colab has: its image, plus the two pure-Python packages
of EfficientNet-Lite0 that load_pretrained installs there on first use."""
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def _lines(path):
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def test_colabs_versions_meet_every_floor_of_requirements_txt():
    colab = {}
    for line in _lines(REPO / ".ci" / "colab-versions.txt"):
        name, _, version = line.partition("==")
        if version:
            colab[re.sub(r"-cpu$", "", name.lower())] = Version(version)
    for line in _lines(REPO / "requirements.txt"):
        requirement = Requirement(line)
        name = requirement.name.lower()
        assert name in colab, f"{name} is needed by the notebooks but not pinned as Colab has it"
        assert requirement.specifier.contains(colab[name]), f"Colab's {name} {colab[name]} fails {requirement}"


def test_development_requirements_include_the_notebooks_and_ipywidgets_7_is_allowed():
    assert "-r requirements.txt" in _lines(REPO / "requirements-dev.txt")
    widgets = next(Requirement(line) for line in _lines(REPO / "requirements.txt") if line.startswith("ipywidgets"))
    assert widgets.specifier.contains(Version("7.7.1")) and widgets.specifier.contains(Version("8.1.5"))
