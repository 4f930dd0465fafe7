"""`make run` names the code it runs: every service gets ``RECSYS_CODE_VERSION`` from ``git
describe`` of the checkout (what a model's lineage and ``recsys_build_info`` report), unless
the caller set one."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import ROOT, LoadScript


def test_every_service_is_told_this_checkouts_commit(
    load_script: LoadScript, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = load_script("run")
    monkeypatch.delenv("RECSYS_CODE_VERSION", raising=False)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()

    versions = {child.env["RECSYS_CODE_VERSION"] for child in run.children(8000, {}, "redis://e")}

    [version] = versions
    commit = version.removesuffix("-dirty").rpartition("-g")[2]  # a tag's "v1-3-g<hash>" too
    assert len(commit) >= 7
    assert head.startswith(commit)


def test_a_version_the_caller_sets_is_kept(
    load_script: LoadScript, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = load_script("run")
    monkeypatch.setenv("RECSYS_CODE_VERSION", "release-7")

    children = run.children(8000, {}, "redis://e")

    assert {child.env["RECSYS_CODE_VERSION"] for child in children} == {"release-7"}
