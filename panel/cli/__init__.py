"""`helios …`: the server-side commands (commands.py), the API client (client.py) and the
host commands (hosts.py)."""
