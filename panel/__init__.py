"""Helios: a self-hosted platform-as-a-service on Nomad, Consul and Traefik.

Nothing heavy here: the panel is built by ``panel.web.create_app``, the command line lives in
``panel.cli``.
"""

__version__ = "0.1.0"
