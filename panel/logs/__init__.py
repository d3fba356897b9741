"""Log pipeline of apps' build, deploy and runtime logs (pure parts: ``panel.logs.scrub``)."""
