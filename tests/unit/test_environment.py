"""The three places that pin versions agree: requirements.lock, environment.yml, pyproject.toml."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pins(lines):
    out = {}
    for line in lines:
        m = re.match(r"^\s*(?:-\s*)?([A-Za-z0-9_.\-\[\]]+)==([^\s;#\"]+)", line)
        if m:
            out[re.sub(r"\[.*\]", "", m.group(1)).lower().replace("_", "-")] = m.group(2)
    return out


def test_environment_yml_matches_lock():
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    env = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert lock and env == lock
    assert lock["torch"] == "2.13.0"


def test_pyproject_pins_are_in_the_lock():
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    deps = re.findall(r'"([A-Za-z0-9_.\-]+)==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert deps
    for name, ver in deps:
        assert lock.get(name.lower().replace("_", "-")) == ver, name


def test_benchmark_peers_stay_out_of_the_main_environment():
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    for peer in ("torchvision", "dictionary-learning", "cka-pytorch", "sae-lens"):
        assert peer not in lock
