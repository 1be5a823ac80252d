"""Every package in the source tree is listed in pyproject.toml, so a non-editable install ships it."""

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _source_packages():
    found = set()
    for top, name in (("jaxhep", "jaxhep"), ("sbi", "jaxhep.sbi"), ("theory", "jaxhep.theory")):
        base = ROOT / top
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            found.add(".".join((name,) + rel))
    return found


def test_all_packages_are_listed_and_mapped():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert _source_packages() <= listed, sorted(_source_packages() - listed)
    mapping = config["package-dir"]
    assert mapping["jaxhep.sbi"] == "sbi" and mapping["jaxhep.theory"] == "theory"
    for pkg in listed:
        if pkg.startswith("jaxhep.theory."):
            assert (ROOT / mapping[pkg] / "__init__.py").exists()


def test_peers_are_not_core_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    assert "torch" not in core and "sbi" not in core
    assert any(dep.startswith("torch==2.13.0") for dep in project["optional-dependencies"]["bench"])
