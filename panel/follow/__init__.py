"""The follower: Nomad's event stream → outcomes of deployments, recorded through actions."""

from panel.follow.follower import Follower, run_follower

__all__ = ["Follower", "run_follower"]
