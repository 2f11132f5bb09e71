"""The one atomic writer: a target name only ever holds a complete file or directory."""

import json
import os

import pytest

from tfp_flows._atomic import STAGING_PREFIX, staged, write_json


def test_write_json_replaces_the_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    write_json(target, {"b": 2})
    assert json.loads(target.read_text()) == {"b": 2}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError, match="crash"):
        with staged(target) as staging:
            with open(staging, "w") as file:
                file.write("{half")
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_a_directory_is_replaced_only_when_complete(tmp_path):
    target = tmp_path / "saved_model"
    for version in ("old", "new"):
        with staged(target) as staging:
            os.makedirs(staging)
            (tmp_path / staging / "version.txt").write_text(version)
    assert (target / "version.txt").read_text() == "new"
    with pytest.raises(RuntimeError):
        with staged(target) as staging:
            os.makedirs(staging)
            raise RuntimeError("crash")
    assert (target / "version.txt").read_text() == "new"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(STAGING_PREFIX)]


def test_the_temporary_keeps_the_target_suffix(tmp_path):
    with staged(tmp_path / "epoch-0001.keras") as staging:
        assert staging.endswith("epoch-0001.keras")
        assert os.path.basename(staging).startswith(STAGING_PREFIX)
        open(staging, "w").close()
