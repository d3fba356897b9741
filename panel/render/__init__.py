"""Pure renderers: AppSpec → Nomad job JSON and Traefik tags (no I/O)."""
