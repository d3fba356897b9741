"""The only modules that talk to the outside: Nomad, Ansible, GitHub."""
