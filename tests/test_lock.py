"""The lock files in requirements/ cover pyproject.toml: every dependency it names is pinned there,
at a version its specifier allows, with hashes (`make lock` was run after the last change)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def read_lock(name: str) -> dict[str, tuple[Version, int]]:
    """Each pinned package of requirements/NAME.txt: its version and how many hashes it lists."""
    pins: dict[str, tuple[Version, int]] = {}
    current: str | None = None
    for line in (ROOT / "requirements" / f"{name}.txt").read_text(encoding="utf-8").splitlines():
        if match := PIN.match(line):
            current = canonicalize_name(match.group(1))
            pins[current] = (Version(match.group(2)), 0)
        elif current is not None and (hashes := HASH.findall(line)):
            version, count = pins[current]
            pins[current] = (version, count + len(hashes))
        elif line and not line.startswith(" "):
            current = None
    return pins


def requirements(section: str) -> list[Requirement]:
    if section == "build":
        return [Requirement(text) for text in PYPROJECT["build-system"]["requires"]]
    if section == "run":
        return [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]
    return [Requirement(text) for text in PYPROJECT["project"]["optional-dependencies"][section]]


@pytest.mark.parametrize(
    ("lock", "sections"),
    [("tools", ["build"]), ("run", ["run"]), ("test", ["run", "test"])],
)
def test_every_dependency_in_pyproject_is_pinned_with_hashes(
    lock: str, sections: list[str]
) -> None:
    pins = read_lock(lock)
    missing: list[str] = []
    outside: list[str] = []
    for section in sections:
        for requirement in requirements(section):
            name = canonicalize_name(requirement.name)
            if name not in pins:
                missing.append(requirement.name)
            elif not requirement.specifier.contains(pins[name][0], prereleases=True):
                outside.append(f"{requirement} (locked {pins[name][0]})")
    assert not missing, f"not in requirements/{lock}.txt, run `make lock`: {missing}"
    assert not outside, f"locked outside pyproject.toml's range, run `make lock`: {outside}"
    unhashed = [name for name, (_, count) in pins.items() if count == 0]
    assert not unhashed, f"pinned without a hash in requirements/{lock}.txt: {unhashed}"


def test_run_and_test_locks_agree_on_shared_packages() -> None:
    tools, run, test = read_lock("tools"), read_lock("run"), read_lock("test")
    assert set(run) <= set(test), sorted(set(run) - set(test))
    differ = {
        name: (version, test[name][0])
        for locked in (run, tools)
        for name, (version, _) in locked.items()
        if name in test and test[name][0] != version
    }
    assert not differ, f"one package, two versions: {differ}"
