"""Shipping: the Dockerfile does what the README says, hadolint is happy, Spaces reads the front matter."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
README = (ROOT / "README.md").read_text()


def _instructions(name: str) -> list[str]:
    """The arguments of every NAME instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*(#.*\n\s*)*", " ", DOCKERFILE)
    return [line.split(None, 1)[1].strip() for line in text.splitlines() if line.upper().startswith(name + " ")]


def _readme_app_commands() -> list[str]:
    quick = README.split("## Quick start", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", quick, re.S).group(1).strip().splitlines()


def _readme_app_command() -> str:
    """The line that installs and runs the app (the lines before make the virtual environment, take torch)."""
    return _readme_app_commands()[-1]


def test_the_quick_start_makes_a_virtual_environment_and_takes_torchs_cpu_build():
    venv, torch_line, _ = _readme_app_commands()
    assert venv == "python3 -m venv .venv && . .venv/bin/activate"  # Debian and Ubuntu refuse a system-wide pip
    assert torch_line.startswith("pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu")
    assert "--retries 0" in torch_line  # where that index cannot be reached, pip gives up at once
    pinned = re.search(r"^torch==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert torch_line.split()[2] == f"torch=={pinned}"


def test_hadolint_passes_at_warning_level():
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    proc = subprocess.run([binary, "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_image_builds_and_runs_with_the_readme_commands():
    install, run = [part.strip() for part in _readme_app_command().split("&&")]
    assert install == "pip install -r requirements.txt" and run == "python app.py"
    assert [r for r in _instructions("RUN") if r.startswith("pip ")] == [install]
    assert shlex.join(eval(_instructions("CMD")[0])) == run  # CMD ["python", "app.py"]


def test_the_image_is_what_spaces_expects():
    assert _instructions("FROM") == ["python:3.11-slim"]
    assert any("--uid 1000" in r for r in _instructions("RUN")) and _instructions("USER") == ["1000"]
    env = " ".join(_instructions("ENV"))
    assert "GRADIO_SERVER_NAME=0.0.0.0" in env and "GRADIO_SERVER_PORT=7860" in env
    assert "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" in env  # the CPU torch build
    assert _instructions("EXPOSE") == ["7860"] and "7860" in _instructions("HEALTHCHECK")[0]


def test_dockerignore_keeps_what_the_app_needs():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    needed = ["app.py", "requirements.txt", "core/model.py", "ui/train_tab.py", "docs/task3.md",
              "assets/default_model/config.json",
              "assets/default_model/heads.safetensors", "assets/default_model/sentence_lab_files.json"]
    for path in needed:
        assert (ROOT / path).exists(), path
        assert not any(Path(path).match(p) or path.startswith(p.rstrip("/") + "/") for p in patterns), path
    assert ".git" in patterns and "tests" in patterns


def _front_matter() -> dict:
    assert README.startswith("---\n"), "the README must start with the Spaces front matter"
    return yaml.safe_load(README.split("---\n", 2)[1])


def test_spaces_front_matter_matches_the_pins():
    meta = _front_matter()
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == pins["gradio"].split()[0]
    assert (ROOT / meta["app_file"]).is_file() and meta["app_file"] == "app.py"
    assert str(meta["python_version"]) == "3.11" == _instructions("FROM")[0].split(":")[1].split("-")[0]


@pytest.mark.parametrize("section", ["**Locally:**", "**Docker:**", "**HuggingFace Spaces:**"])
def test_readme_explains_each_way_to_run_it(section):
    assert section in README
