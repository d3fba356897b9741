"""The only writers of desired state: apps, members, tokens, hosts, accounts, sessions,
deployments. Each action checks permission, validates, writes rows, emits its event and enqueues
the job that takes ids; pages, API, CLI, webhooks and the follower are thin callers."""
