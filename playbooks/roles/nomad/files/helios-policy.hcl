# ACL policy "helios": what the Helios panel, worker and follower call, and nothing more.
# The nomad role sends this file as the policy's rules (POST /v1/acl/policy/helios) and gives
# Helios a client token with it. Creating namespaces needs a management token, which no policy
# can grant: the role hands the panel a separate one for that alone (helios-namespaces).

# Apps, builds and one-off runs live in NOMAD_NAMESPACE and the teams' namespaces.
namespace "*" {
  capabilities = [
    # Dashboard, drift checks, app pages: list and read jobs, their versions, evaluations,
    # deployments and allocations, allocation stats; job validation before a deploy.
    "list-jobs",
    "read-job",
    # Deploys (plan and register), rollbacks (revert), app deletion and stopping one-off runs
    # (deregister, purge), canary promotion and failing a deployment.
    "submit-job",
    # Scaling an app's process groups (POST /v1/job/<id>/scale).
    "read-job-scaling",
    "scale-job",
    # App logs and build logs (GET /v1/client/fs/logs).
    "read-logs",
  ]

  # App, run and build secrets: Nomad Variables at nomad/jobs/<job> (read by the job's tasks
  # through their workload identity; written and removed by Helios at deploy and deletion).
  variables {
    path "nomad/jobs/*" {
      capabilities = ["read", "write", "destroy", "list"]
    }
  }
}

# Hosts page and fleet maintenance: read nodes and their allocations, drain a node before it is
# removed or patched, and make it eligible again afterwards. The follower's Node events need
# node read as well.
node {
  policy = "write"
}
