"""Packaging: everything is in setup.cfg except the package list.

``twisted/plugins`` has no ``__init__.py`` (by Twisted's design), so ``find_packages`` cannot
see it; it is listed explicitly or ``twistd p2pnet`` would not find the plugin once installed.
"""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["p2pnet", "p2pnet.*"]) + ["twisted.plugins"])
