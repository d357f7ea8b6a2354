"""The app as a Hugging Face Space: `python -m ui space --out DIR`, built as the Space builder does.

A Gradio Space installs `gradio==<sdk_version>` and `requirements.txt` into a fresh environment,
before the repository is copied in, then runs `python app.py` in the repository. The slow test
does the same offline: a fresh venv that sees this environment's installed packages (a .pth, so
pip resolves every pin of requirements.txt against them and downloads nothing), pip install,
`python app.py` in DIR with local model folders in MAMBA_MODEL / GPT2_MODEL, one Compare in Chromium.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1].parent


def _requirement_names(lines) -> dict[str, str]:
    return {re.split(r"[<>=!~ ]", line, maxsplit=1)[0].lower(): line for line in lines}


def test_requirements_list_pyprojects_dependencies_with_torch_pinned_to_the_cpu_wheel():
    from ui import space

    declared = _requirement_names(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    lines = [ln for ln in space.REQUIREMENTS.splitlines() if ln and not ln.startswith("#")]
    listed = _requirement_names(ln for ln in lines if not ln.startswith("--"))
    assert listed.keys() == declared.keys()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert re.fullmatch(r"torch==\d+\.\d+\.\d+", listed["torch"])
    # the README's set-up commands install the same torch
    assert f"pip install {listed['torch']} " in (ROOT / "README.md").read_text()


def test_the_repository_root_is_a_space_as_it_stands():
    import gradio

    from ui import space

    readme = (ROOT / "README.md").read_text()
    assert readme.startswith(space.front_matter(gradio.__version__))
    assert (ROOT / "app.py").read_text() == space.APP
    assert (ROOT / "requirements.txt").read_text() == space.REQUIREMENTS


def test_space_writes_front_matter_app_requirements_and_the_source(tmp_path):
    import gradio

    subprocess.run([sys.executable, "-m", "ui", "space", "--out", str(tmp_path / "space")], cwd=ROOT,
                   check=True, capture_output=True, timeout=120)
    out = tmp_path / "space"
    readme = (out / "README.md").read_text()
    assert f"\nsdk_version: {gradio.__version__}\n" in readme and "\nsdk: gradio\n" in readme
    assert "\napp_file: app.py\n" in readme
    for package in ("compare", "ui", "datasets_gen"):
        assert (out / package / "__init__.py").is_file()
    assert not list(out.rglob("__pycache__"))


def test_space_refuses_a_folder_that_holds_files(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = subprocess.run([sys.executable, "-m", "ui", "space", "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "--out must be a new or empty folder" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"app.py exited with {process.returncode}: {process.stdout.read()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"app.py did not serve on port {port} within {seconds} s")


@pytest.mark.slow
@pytest.mark.browser
def test_the_space_builds_as_spaces_build_and_serves_a_compare(tmp_path, tiny_dirs):
    import gradio

    from test_ui_browser import CHROMIUM, FLAGS, TIMEOUT_MS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing: run .ci/browser-setup.sh")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    out = tmp_path / "space"
    subprocess.run([sys.executable, "-m", "ui", "space", "--out", str(out)], cwd=ROOT, check=True, timeout=120)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "installed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index",
                              f"gradio=={gradio.__version__}", "-r", "requirements.txt"],
                             cwd=out, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    found = subprocess.run([str(python), "-c", "import compare, ui; print(compare.__file__, ui.__file__)"],
                           cwd=out, check=True, capture_output=True, text=True).stdout.split()
    assert all(Path(f).is_relative_to(out) for f in found), found  # the Space's copy, not this checkout

    dirs, _ = tiny_dirs
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(MAMBA_MODEL=str(dirs["mamba"]), GPT2_MODEL=str(dirs["gpt2"]), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_SERVER_PORT=str(port), GRADIO_EXAMPLES_CACHE=str(tmp_path / "examples"),
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    app = subprocess.Popen([str(python), "app.py"], cwd=out, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_port(port, app, 120)
        with sync_api.sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                tempfile.mkdtemp(prefix="chromium-profile-"), executable_path=str(CHROMIUM), args=FLAGS)
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#cmp-prompt textarea").fill("When Mary and John went to the store")
            page.locator("#cmp-run").click()
            table = page.locator("#cmp-table")
            sync_api.expect(table).to_contain_text("store", timeout=60_000)
            assert "mamba prediction" in table.inner_text() and "gpt2 prediction" in table.inner_text()
            context.close()
    finally:
        app.terminate()
        app.wait(timeout=30)
