"""The wheel works: built from the sources, installed with --target, it finds its gin configs.

One wheel build per session (module fixture, ~2 s, offline: --no-build-isolation uses the
venv's setuptools), from a copy of the package sources so the working tree gets no build/
or egg-info. The installed package is used from a subprocess whose cwd is not the repo.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("setup.py", "pyproject.toml", "MANIFEST.in", "tfcp", "gin_configs")
EXPERIMENT = "experiments/maskrcnn_r50_fpn_1024_lsj_copy_paste.gin"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """(wheel path, install target) of a wheel built from the current sources."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        path = os.path.join(REPO, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy(path, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(src)],
        check=True,
        capture_output=True,
        cwd=root,
    )
    (wheel_path,) = glob.glob(str(root / "dist" / "tfcp-*.whl"))
    target = root / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), wheel_path],
        check=True,
        capture_output=True,
        cwd=root,
    )
    return wheel_path, str(target)


def _relative_files(top, pattern):
    return {os.path.relpath(p, top) for p in glob.glob(os.path.join(top, pattern), recursive=True)}


def test_wheel_holds_every_module_and_every_gin_config(wheel):
    with zipfile.ZipFile(wheel[0]) as z:
        names = set(z.namelist())
    modules = {
        os.path.join("tfcp", p) for p in _relative_files(os.path.join(REPO, "tfcp"), "**/*.py")
    }
    gin_files = _relative_files(os.path.join(REPO, "gin_configs"), "**/*.gin")
    assert len(gin_files) > 40
    assert modules <= names, sorted(modules - names)
    shipped_gin = {
        n[len("tfcp/gin_configs/") :] for n in names if n.startswith("tfcp/gin_configs/")
    }
    assert shipped_gin == gin_files


_RESOLVE = textwrap.dedent(
    """
    import json, sys
    import gin
    import tfcp
    from tfcp import gin_utils
    path = gin_utils.resolve_gin_file(sys.argv[1])
    gin_utils.parse_gin([path], sys.argv[2:])  # with its includes, finalized
    print(json.dumps({
        "tfcp": tfcp.__file__,
        "gin_configs_dir": gin_utils.GIN_CONFIGS_DIR,
        "path": path,
        "same_file_by_repo_path": gin_utils.resolve_gin_file("gin_configs/" + sys.argv[1]),
        "image_size": gin.query_parameter("%IMAGE_SIZE"),
        "learning_rate": gin.query_parameter("tfcp.build_learning_rate.base_learning_rate"),
        "model_id": gin.query_parameter("build_maskrcnn.model_id"),
        "copy_paste_prob": gin.query_parameter("train/build_dataset.copy_paste_prob"),
    }))
    """
)


def test_installed_package_resolves_and_parses_an_experiment_config(wheel, tmp_path):
    target = wheel[1]
    env = {**os.environ, "PYTHONPATH": target, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    bindings = [
        "TRAIN_FILES='/data/train-*'",
        "EVAL_FILES='/data/val-*'",
        "EVAL_ANNOTATIONS='/data/val.json'",
        "TRAIN_STEPS=10",
    ]
    result = subprocess.run(
        [sys.executable, "-c", _RESOLVE, EXPERIMENT, *bindings],
        cwd=tmp_path,  # not the repo: nothing is found through the cwd
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    installed = os.path.join(target, "tfcp")
    assert out["tfcp"] == os.path.join(installed, "__init__.py")  # not the repo's tfcp
    assert out["gin_configs_dir"] == os.path.join(installed, "gin_configs")
    assert out["path"] == os.path.join(installed, "gin_configs", EXPERIMENT)
    assert out["same_file_by_repo_path"] == out["path"]
    # Values from the file itself and from each of its includes (models/, runs/, data/).
    assert out["image_size"] == 1024
    assert out["model_id"] == 50
    assert out["learning_rate"] == 0.32
    assert out["copy_paste_prob"] == 1.0
