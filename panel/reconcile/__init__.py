"""Reconcile: make Nomad match the desired state, and record what happened."""
