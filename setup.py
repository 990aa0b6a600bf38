"""Package discovery; every other setting lives in pyproject.toml.

Every package under prune2deploy/ is found, not listed, so a new subpackage cannot be left out of the
wheel. backends/ sits at the top of the repository but installs as prune2deploy.backends (with any
subpackages), so nothing claims a generic top-level name in site-packages.
"""
from setuptools import find_packages, setup

MAPPED = {"prune2deploy.backends": "backends"}  # installed name -> folder in the repository


def discover() -> list[str]:
    packages = find_packages(include=["prune2deploy", "prune2deploy.*"])
    for name, folder in MAPPED.items():
        packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]
    return packages


setup(packages=discover(), package_dir=MAPPED)
