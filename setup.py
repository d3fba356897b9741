"""Package layout of Helios (its metadata and package data are in pyproject.toml).

The Ansible playbooks live at the top of the repository in ``playbooks/`` (the Vagrantfile,
the README's commands and the tests use them there), and the wheel ships them inside the
``panel`` package as ``panel/playbooks/``: ``package_dir`` maps that package onto the
top-level folder, so an installed Helios provisions hosts without a checkout
(``panel.reconcile.provision`` finds them there; ``HELIOS_PLAYBOOKS_DIR`` overrides).
pyproject.toml cannot list these packages itself: its package finder does not follow
``package-dir`` mappings.
"""

from setuptools import find_namespace_packages, setup

PLAYBOOKS = "panel.playbooks"

setup(
    packages=[
        *find_namespace_packages(include=["panel", "panel.*"]),
        PLAYBOOKS,
        *(f"{PLAYBOOKS}.{name}" for name in find_namespace_packages(where="playbooks")),
    ],
    package_dir={PLAYBOOKS: "playbooks"},
)
