"""Every CLI error a newcomer hits is one line, ``actstore: error: ...``, with the fix.

Each test runs the real command (in-process through ``actstore.cli.main``, or as a
subprocess where the environment matters) against real local folders, the moto S3 server
and the loopback Hub; none needs the network.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from actstore.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _tiny_dataset(path: Path, n: int = 40, layers=(0, 1, 2), dim: int = 8) -> Path:
    from actstore.format.writer import DatasetWriter

    rng = np.random.default_rng(0)
    with DatasetWriter(str(path), model="org/tiny-model", layers=list(layers), dim=dim,
                       pooling="last_token") as w:
        w.add([f"prompt {i}" for i in range(n)],
              hidden={L: rng.standard_normal((n, dim)).astype("float32") for L in layers},
              labels=[i % 2 for i in range(n)])
    return path


def _error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit status 2 and exactly one ``actstore: error:`` line; return it."""
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, (argv, captured)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("actstore: error: "), lines[0]
    assert "Traceback" not in captured.err
    return lines[0]


def _run(args: list[str], env: dict[str, str] | None = None, cwd: str | None = None):
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full.pop("ACTSTORE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "actstore", *args], capture_output=True,
                          text=True, env=full, cwd=cwd, timeout=300)


def _one_line(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("actstore: error: "), result.stderr
    return lines[0]


# -- URLs -------------------------------------------------------------------------------------

def test_unknown_url_scheme_names_the_scheme(capsys):
    line = _error(capsys, ["info", "htp://typo/ds"])
    assert "Unknown URL scheme 'htp://'" in line and "s3://" in line


def test_missing_filesystem_package_says_what_to_install(capsys, monkeypatch):
    registry = sys.modules["fsspec.registry"]
    monkeypatch.setitem(registry.known_implementations, "ncfake",
                        {"class": "ncfake_fs_not_installed.FS", "err": "Please install it"})
    line = _error(capsys, ["info", "ncfake://bucket/ds"])
    assert "needs the package 'ncfake_fs_not_installed'" in line
    assert "pip install ncfake_fs_not_installed" in line


def test_gs_without_gcsfs_says_pip_install_gcsfs():
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed")
    except ImportError:
        pass
    assert "pip install gcsfs" in _one_line(_run(["info", "gs://bucket/ds"]))


def test_s3_without_credentials_says_what_to_set():
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
           "AWS_PROFILE": "", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(k)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run([sys.executable, "-m", "actstore", "info", "s3://some-bucket/ds"],
                            capture_output=True, text=True, timeout=300,
                            env={**full_env, **env, "PYTHONPATH": str(ROOT)})
    line = _one_line(result)
    assert "No credentials" in line and "AWS_ACCESS_KEY_ID" in line and "anon" in line


def test_debug_flag_shows_the_traceback(capsys):
    with pytest.raises(Exception, match="Unknown URL scheme"):
        main(["--debug", "info", "htp://typo/ds"])
    with pytest.raises(Exception, match="Unknown URL scheme"):
        main(["info", "htp://typo/ds", "--debug"])


# -- sweep / report ---------------------------------------------------------------------------

def test_sweep_bad_layers_is_refused_before_opening(capsys, tmp_path):
    line = _error(capsys, ["sweep", str(tmp_path / "never-opened"), "--layers", "al"])
    assert "--layers 'al'" in line and "comma-separated" in line


def test_sweep_plot_path_is_checked_before_the_sweep(capsys, tmp_path, monkeypatch):
    import actstore.probe

    ds = _tiny_dataset(tmp_path / "ds")
    monkeypatch.setattr(actstore.probe, "sweep_layers",
                        lambda *a, **k: pytest.fail("the sweep ran before the plot path was checked"))
    line = _error(capsys, ["sweep", str(ds), "--plot", "/nonexistent/dir/s.png"])
    assert "/nonexistent/dir" in line and "does not exist" in line


def test_report_of_a_csv_says_it_needs_parquet(capsys, tmp_path):
    csv = tmp_path / "small.csv"
    csv.write_text("layer,accuracy\n1,0.5\n")
    line = _error(capsys, ["report", str(csv)])
    assert "not a Parquet results file" in line and "--results" in line


def test_report_missing_file(capsys, tmp_path):
    assert "No results file" in _error(capsys, ["report", str(tmp_path / "none.parquet")])


def test_report_unknown_by_column_is_refused(capsys, tmp_path):
    ds = _tiny_dataset(tmp_path / "ds")
    results = tmp_path / "r.parquet"
    assert main(["sweep", str(ds), "--layers", "0,1", "--cv", "2", "--results", str(results)]) == 0
    capsys.readouterr()
    line = _error(capsys, ["report", str(results), "--by", "nosuch"])
    assert "--by nosuch" in line and "layer" in line
    assert main(["report", str(results), "--by", "layer"]) == 0


# -- push / pull --------------------------------------------------------------------------------

def test_push_bad_repo_id(capsys, tmp_path):
    ds = _tiny_dataset(tmp_path / "g2")
    line = _error(capsys, ["push", str(ds), "bad repo id"])
    assert "'bad repo id' is not a Hub dataset repo id" in line and "org/name" in line


@pytest.mark.hub
def test_pull_url_form_and_not_found(capsys, hub, tmp_path):
    line = _error(capsys, ["pull", "hf://datasets/me/g2", "--out", str(tmp_path / "o")])
    assert "'me/g2'" in line and "not found" in line
    assert "rerun" not in line.lower()


@pytest.mark.hub
def test_pull_layers_take_commas(capsys, hub, tmp_path, monkeypatch):
    from actstore.hub import push_dataset

    monkeypatch.setenv("HF_TOKEN", "hf_test_write")
    ds = _tiny_dataset(tmp_path / "g2")
    push_dataset(str(ds), "me/g2-commas")
    monkeypatch.delenv("HF_TOKEN")
    out = tmp_path / "pulled"
    assert main(["pull", "hf://datasets/me/g2-commas", "--layers", "0,2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 tensor files" in printed or "pulled me/g2-commas" in printed
    files = sorted(p.name for p in (out / "tensors").rglob("*.safetensors"))
    assert files and not any("layer_001" in f or "layer_1" in f for f in files), files
    assert "--layers" in _error(capsys, ["pull", "me/g2-commas", "--layers", "two"])


# -- the parser itself ----------------------------------------------------------------------------

def _all_parsers(parser: argparse.ArgumentParser, name: str = "actstore"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, child in action.choices.items():
                yield from _all_parsers(child, f"{name} {sub_name}")


def test_every_option_has_help_and_names_its_default():
    for name, parser in _all_parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{label} has no help text"
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert "default" in action.help, f"{label} does not name its default"


# -- extract: the model argument, before anything is loaded -----------------------------------

def _prompts(tmp_path: Path) -> str:
    path = tmp_path / "p.txt"
    path.write_text("one\ntwo\n")
    return str(path)


def test_extract_missing_local_folder_is_not_treated_as_a_hub_id(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _error(capsys, ["extract", "./no-such-dir", _prompts(tmp_path), "--out", "o"])
    assert "No model folder at './no-such-dir'" in line and "Repo id" not in line


def test_extract_folder_without_config_is_not_a_model(capsys, tmp_path):
    (tmp_path / "notes").mkdir()
    line = _error(capsys, ["extract", str(tmp_path / "notes"), _prompts(tmp_path), "--out",
                           str(tmp_path / "o")])
    assert "is not a model folder: it has no config.json" in line


@pytest.mark.hub
def test_extract_unknown_hub_model(capsys, hub, tmp_path):
    line = _error(capsys, ["extract", "no-such-model", _prompts(tmp_path), "--out",
                           str(tmp_path / "o")])
    assert "'no-such-model' is not a local folder and was not found on the Hub" in line


def test_extract_cuda_on_cpu_torch(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = _error(capsys, ["extract", "whatever", _prompts(tmp_path), "--out", str(tmp_path / "o"),
                           "--device", "cuda"])
    assert "--device cuda" in line and "--device cpu" in line
    assert not (tmp_path / "o").exists()


# -- hf:// URLs: an unknown revision and an unreachable Hub are different problems --------------

@pytest.mark.hub
def test_unknown_revision_and_connection_refused_differ(capsys, hub, tmp_path, monkeypatch):
    from actstore.hub import push_dataset

    monkeypatch.setenv("HF_TOKEN", "hf_test_write")
    push_dataset(str(_tiny_dataset(tmp_path / "ds")), "me/revs")
    bad_rev = _error(capsys, ["info", "hf://datasets/me/revs@no-such-branch"])
    assert "no-such-branch" in bad_rev and "revision" in bad_rev.lower()
    assert "credentials" not in bad_rev


def test_connection_refused_is_not_called_a_missing_revision(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = _one_line(_run(["info", "hf://datasets/me/revs@v1"],
                          env={"HF_ENDPOINT": f"http://127.0.0.1:{port}",
                               "ACTSTORE_CACHE_DIR": str(tmp_path / "cache")}))
    assert "Could not connect to the Hub" in line and "revision" not in line.replace("HF_ENDPOINT", "")


@pytest.mark.hub
def test_a_404_does_not_say_rerun_to_resume(capsys, hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_write")
    ds = _tiny_dataset(tmp_path / "ds")
    hub.fail_uploads(1, times=100, status=404)
    try:
        line = _error(capsys, ["push", str(ds), "me/gone-404"])
    finally:
        hub.clear_faults()
    assert "404" in line and "rerun" not in line.lower() and "resume" not in line.lower()


def test_extract_folder_with_a_config_of_no_known_model(capsys, tmp_path):
    folder = tmp_path / "weird"
    folder.mkdir()
    (folder / "config.json").write_text('{"hello": 1}')
    line = _error(capsys, ["extract", str(folder), _prompts(tmp_path), "--out", str(tmp_path / "o")])
    assert "is not a transformers model" in line


def test_scheme_check_follows_chained_urls():
    from actstore.errors import InvalidArgumentError
    from actstore.open import check_protocol

    check_protocol("simplecache::memory://bucket/ds")  # valid chains pass
    check_protocol("relative/folder")
    with pytest.raises(InvalidArgumentError, match="'htp://'"):
        check_protocol("simplecache::htp://bucket/ds")
