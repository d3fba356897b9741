"""Static checks of playbooks/ and inventory/: ansible-lint, syntax, yamllint, vagrant, and
no templated value that a shell could read as code."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
YAML_PATHS = ["playbooks", "inventory", ".yamllint", ".ansible-lint"]


def _tool(name: str) -> str:
    path = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]' or bash .ci/run)")
    return path


def _run(*argv: str, timeout: float = 240, extra_env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1", **(extra_env or {})}  # fmt: skip
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def test_ansible_lint_production_profile():
    result = _run(_tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("playbook", ["site.yml", "verify.yml"])
def test_playbook_syntax(playbook):
    result = _run(_tool("ansible-playbook"), "--syntax-check", "-i", "inventory/hosts.yml",
                  f"playbooks/{playbook}")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint():
    result = _run(_tool("yamllint"), "--strict", *YAML_PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_role_variable_is_prefixed_and_documented():
    import re

    for role_dir in sorted((REPO_ROOT / "playbooks" / "roles").iterdir()):
        role = role_dir.name
        defaults = (role_dir / "defaults" / "main.yml").read_text()
        names = re.findall(r"(?m)^([a-z_][a-z0-9_]*):", defaults)
        assert names, role
        readme = (role_dir / "README.md").read_text()
        for name in names:
            assert name.startswith(f"{role}_"), f"{role}: {name} lacks the role prefix"
            assert f"`{name}`" in readme, f"{role}/README.md does not list {name}"
        for line in (role_dir / "vars" / "main.yml").read_text().splitlines():
            match = re.match(r"^([a-z_][a-z0-9_]*):", line)
            assert match is None or match.group(1).startswith(f"_{role}_"), (role, line)


def test_vagrantfile_is_valid():
    vagrant = shutil.which("vagrant")
    if vagrant is None:
        reason = "vagrant is not installed (Debian package vagrant; bash .ci/run installs it)"
        if os.environ.get("HELIOS_REQUIRE_CONVERGE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    result = _run(vagrant, "validate", "--ignore-provider")
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# Shells never read a templated value as code
# ---------------------------------------------------------------------------------------------

SHELL_TEMPLATES = sorted((REPO_ROOT / "playbooks").rglob("*.sh.j2"))
_EXPRESSION_RE = re.compile(r"{{(.*?)}}", re.S)
# A value quoted whole, or a list whose items are each quoted.
_QUOTED_RE = re.compile(r"\|\s*quote\s*$|\|\s*map\(\s*'quote'\s*\)\s*\|\s*join\(\s*' '\s*\)\s*$")
HOSTILE = "$(touch MARK)`touch MARK`;touch MARK;'\"\n touch MARK #"
SHELL_MODULES = {"shell", "ansible.builtin.shell", "raw", "ansible.builtin.raw",
                 "script", "ansible.builtin.script"}  # fmt: skip
COMMAND_MODULES = {"command", "ansible.builtin.command"}


def test_there_are_shell_templates_to_check():
    names = {path.name for path in SHELL_TEMPLATES}
    assert {"nomad-acl-bootstrap.sh.j2", "consul-acl-setup.sh.j2"} <= names


@pytest.mark.parametrize("template", SHELL_TEMPLATES, ids=lambda path: path.name)
def test_every_value_in_a_shell_template_is_quoted(template):
    unquoted = [
        f"{template.relative_to(REPO_ROOT)}:{template.read_text()[: m.start()].count(chr(10)) + 1}:"
        f" {{{{{m.group(1)}}}}}"
        for m in _EXPRESSION_RE.finditer(template.read_text())
        if not _QUOTED_RE.search(m.group(1).strip())
    ]
    assert not unquoted, "end each expression with `| quote`:\n" + "\n".join(unquoted)


def _tasks(document):
    """Every task mapping in a playbook or task file, blocks and plays included."""
    if isinstance(document, list):
        for item in document:
            yield from _tasks(item)
    elif isinstance(document, dict):
        yield document
        for key in ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always"):
            yield from _tasks(document.get(key))


def _task_files():
    playbooks = REPO_ROOT / "playbooks"
    return [*playbooks.glob("*.yml"), *playbooks.glob("roles/*/tasks/*.yml"),
            *playbooks.glob("roles/*/handlers/*.yml")]  # fmt: skip


def test_no_task_hands_a_templated_value_to_a_shell():
    problems = []
    for path in _task_files():
        for task in _tasks(yaml.safe_load(path.read_text())):
            where = f"{path.relative_to(REPO_ROOT)}: {task.get('name', '?')}"
            for module in SHELL_MODULES & set(task):
                problems.append(f"{where}: {module} runs a shell; use command with argv")
            for module in COMMAND_MODULES & set(task):
                args = task[module]
                line = args if isinstance(args, str) else (args or {}).get("cmd", "")
                if "{{" in str(line):
                    problems.append(f"{where}: a templated command line; use argv")
            # validate: commands are split like a shell would; only %s may vary.
            for args in task.values():
                if isinstance(args, dict) and "{{" in str(args.get("validate", "")):
                    problems.append(f"{where}: a templated validate command")
    assert not problems, "\n".join(problems)


def _render(template: Path, value: str) -> str:
    """The template rendered with ``value`` for every variable, through Ansible's filters."""
    import jinja2
    import jinja2.meta
    from ansible.plugins.filter.core import FilterModule

    # Shell text, not HTML: no autoescape, as Ansible renders templates.
    environment = jinja2.Environment(  # noqa: S701
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    environment.filters.update(FilterModule().filters())
    parsed = environment.parse(template.read_text())
    names = jinja2.meta.find_undeclared_variables(parsed)
    variables = {name: _Anything(value) for name in names}
    return environment.from_string(template.read_text()).render(**variables)


class _Anything(str):
    """A hostile string that also answers attribute lookups (``consul_ports.https``)."""

    def __getattr__(self, name: str) -> str:
        return str(self)


@pytest.mark.parametrize("template", SHELL_TEMPLATES, ids=lambda path: path.name)
def test_a_shell_template_runs_hostile_values_as_data(template, tmp_path):
    script = tmp_path / "script.sh"
    script.write_text(_render(template, HOSTILE))
    # It waits for a service that is not there: by the timeout it has run what it would run.
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(["sh", str(script)], cwd=tmp_path, capture_output=True, timeout=3,
                       env={"PATH": "/usr/bin:/bin"}, check=False)  # fmt: skip
    assert not (tmp_path / "MARK").exists(), "a templated value ran as shell code"


# ---------------------------------------------------------------------------------------------
# Tasks that handle a secret hide it
# ---------------------------------------------------------------------------------------------

# Variables that hold a secret (the registry's password, the cluster's keys and tokens) or the
# result of reading one, and the password lookup that generates them.
_SECRET_RE = re.compile(
    r"\b_registry_password(?:_read)?\b|\b_(?:consul|nomad)_secrets?(?:_files)?\b"
    r"|\b_traefik_token(?:_file)?\b|lookup\('ansible\.builtin\.password'"
    r"|\bconsul_nomad_agents_token\b|\b_nomad_consul_token(?:_read)?\b"
)
_TEMPLATE_MODULES = {"template", "ansible.builtin.template"}
# An assert shows its own message, never the values it compares.
_ASSERT_MODULES = {"assert", "ansible.builtin.assert"}


def _touches_a_secret(task: dict, role_dir: Path | None) -> bool:
    """Whether the task's arguments, registered result or template hold a secret."""
    ignored = {"name", "when", "block", "rescue", "always"}
    shown = {key: value for key, value in task.items() if key not in ignored}
    for module in _ASSERT_MODULES & set(task):
        shown = {"fail_msg": task[module].get("fail_msg", "")}
    if _SECRET_RE.search(str(shown)):
        return True
    for module in _TEMPLATE_MODULES & set(task):
        source = (role_dir / "templates" / task[module]["src"]) if role_dir else None
        if source and source.exists() and _SECRET_RE.search(source.read_text()):
            return True
    return False


def test_every_task_that_handles_a_secret_has_no_log():
    checked, problems = 0, []
    for path in _task_files():
        role_dir = path.parents[1] if path.parent.name in {"tasks", "handlers"} else None
        for task in _tasks(yaml.safe_load(path.read_text())):
            if "block" in task or not _touches_a_secret(task, role_dir):
                continue
            checked += 1
            if task.get("no_log") is not True:
                problems.append(f"{path.relative_to(REPO_ROOT)}: {task.get('name', '?')}")
    assert checked >= 15, "the check no longer finds the tasks that handle secrets"
    assert not problems, "add `no_log: true`:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# The roles' own variables and templates, rendered by ansible-playbook on this machine
# ---------------------------------------------------------------------------------------------

# Each host loads the nomad, docker, pki and registry roles' variables through their own
# checks (asserts.yml), then writes what the roles would use: the Nomad agent configuration,
# rendered from the role's template, the Traefik configuration on edge hosts, and the
# registry's address as each role computes it.
_RENDER_PLAYBOOK = """---
- name: Render what the roles would configure
  hosts: all
  gather_facts: false
  tasks:
    - name: Load the nomad role's variables and run its checks
      ansible.builtin.include_role: {name: nomad, tasks_from: asserts.yml, public: true}
    - name: Load the docker role's variables and run its checks
      ansible.builtin.include_role: {name: docker, tasks_from: asserts.yml, public: true}
    - name: Load the pki role's variables and run its checks
      ansible.builtin.include_role: {name: pki, tasks_from: asserts.yml, public: true}
    - name: Load the registry role's variables and run its checks
      ansible.builtin.include_role: {name: registry, tasks_from: asserts.yml, public: true}
      when: inventory_hostname in groups['registry'] | default([])
    - name: Load the traefik role's variables and run its checks
      ansible.builtin.include_role: {name: traefik, tasks_from: asserts.yml, public: true}
      when: inventory_hostname in groups['edge'] | default([])
    - name: Render the Traefik configuration
      ansible.builtin.template:
        src: "{{ roles_dir }}/traefik/templates/traefik.yml.j2"
        dest: "{{ out_dir }}/{{ inventory_hostname }}-traefik.yml"
        mode: "0600"
      vars:
        _traefik_token: a-token
      when: inventory_hostname in groups['edge'] | default([])
    - name: Render the DNS provider's credentials for ACME
      ansible.builtin.template:
        src: "{{ roles_dir }}/traefik/templates/acme-dns.env.j2"
        dest: "{{ out_dir }}/{{ inventory_hostname }}-acme.env"
        mode: "0600"
      when: inventory_hostname in groups['edge'] | default([]) and traefik_acme_challenge == 'dns'
    - name: Render the Nomad agent configuration
      ansible.builtin.template:
        src: "{{ roles_dir }}/nomad/templates/nomad.json.j2"
        dest: "{{ out_dir }}/{{ inventory_hostname }}-nomad.json"
        mode: "0600"
    - name: Render the Nomad agent's secrets
      ansible.builtin.template:
        src: "{{ roles_dir }}/nomad/templates/secrets.json.j2"
        dest: "{{ out_dir }}/{{ inventory_hostname }}-secrets.json"
        mode: "0600"
      vars:
        _nomad_secrets: {nomad-gossip.key: a-gossip-key}
    - name: Write what the roles computed
      ansible.builtin.copy:
        content: "{{ {'docker_registry': _docker_registry_address,
          'nomad_registry': _nomad_registry_address, 'registry_user': _nomad_registry_username,
          'registry_listens': _registry_address | default(''),
          'certificates': _pki_certs | map(attribute='name') | list,
          'secrets': _nomad_secret_names} | to_json }}"
        dest: "{{ out_dir }}/{{ inventory_hostname }}-roles.json"
        mode: "0600"
"""


def _host(address: str, **more) -> dict:
    return {
        "helios_private_address": address,
        "nomad_bind_address": address,
        "pki_address": address,
        # These addresses are on no interface of this machine: the interface is named.
        "nomad_network_interface": "eth0",
        **more,
    }


def _render_roles(tmp_path: Path, groups: dict[str, dict]):
    """Run _RENDER_PLAYBOOK on an inventory of local hosts: its result, and what each host
    wrote ({host: {"nomad": agent configuration, "roles": computed values}})."""
    out = tmp_path / "out"
    out.mkdir()
    roles_dir = str(REPO_ROOT / "playbooks" / "roles")
    settings = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "roles_dir": roles_dir,
        "out_dir": str(out),
    }
    children = {name: {"hosts": hosts} for name, hosts in groups.items()}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"vars": settings, "children": children}}))
    (tmp_path / "render.yml").write_text(_RENDER_PLAYBOOK)
    env = {
        "ANSIBLE_ROLES_PATH": roles_dir,
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }
    playbook = str(tmp_path / "render.yml")
    result = _run(_tool("ansible-playbook"), "-i", str(inventory), playbook, extra_env=env)
    written: dict[str, dict] = {}
    for path in out.glob("*-*.*"):
        host, kind = path.stem.rsplit("-", 1)
        text = path.read_text()
        written.setdefault(host, {})[kind] = (
            json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        )
    return result, written


def test_build_nodes_join_their_pool_and_every_client_pulls_from_the_registry(tmp_path):
    result, written = _render_roles(tmp_path, {
        "nomad_servers": {"server1": _host("fd00::10")},
        "registry": {"server1": None},
        "nomad_clients": {"app1": _host("10.0.0.11"), "both1": _host("10.0.0.13"),
                          "old1": _host("10.0.0.14", nomad_version="1.5.6")},
        "build_nodes": {"build1": _host("10.0.0.12"), "both1": None},
    })  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    # A host in both client groups, and an app client of a Nomad without node pools, are
    # refused with the reason; the others go on.
    assert "both1 is in both nomad_clients and build_nodes" in output, output
    assert "need node pools, which Nomad has from 1.6 on (nomad_version is 1.5.6)" in output
    assert set(written) == {"server1", "app1", "build1"}, output

    build, app, server = (written[name]["nomad"] for name in ("build1", "app1", "server1"))
    assert build["client"]["node_pool"] == "build"
    assert "node_pool" not in app["client"], "app clients stay in Nomad's default pool"
    assert "client" not in server and "plugin" not in server
    for config in (build, app, server):  # what jobs/prometheus.nomad.json scrapes
        assert config["telemetry"]["prometheus_metrics"] is True
        assert config["telemetry"]["publish_allocation_metrics"] is True
    for config in (build, app):
        assert config["plugin"]["docker"]["config"]["auth"] == {
            "config": "/etc/docker/helios-registry-auth.json"
        }
    # Docker's certs.d directory and the auths key name the address the registry listens on.
    for name in ("app1", "build1"):
        roles = written[name]["roles"]
        assert roles["docker_registry"] == roles["nomad_registry"] == "[fd00::10]:5000"
        assert roles["registry_user"] == "helios"
        assert "registry.password" in roles["secrets"]
        assert roles["certificates"] == ["consul", "nomad"]
    assert written["server1"]["roles"]["registry_listens"] == "[fd00::10]:5000"
    # The CA host (the first server) also holds the panel's client certificate for Nomad.
    assert written["server1"]["roles"]["certificates"] == [
        "consul",
        "nomad",
        "registry",
        "helios-nomad-client",
    ]


def test_without_a_registry_or_build_nodes_the_clients_are_configured_as_before(tmp_path):
    result, written = _render_roles(tmp_path, {
        "nomad_servers": {"server1": _host("10.0.0.10")},
        "nomad_clients": {"app1": _host("10.0.0.11")},
    })  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    app = written["app1"]
    assert "node_pool" not in app["nomad"]["client"]
    assert "auth" not in app["nomad"]["plugin"]["docker"]["config"]
    assert app["roles"]["docker_registry"] == app["roles"]["nomad_registry"] == ""
    assert "registry.password" not in app["roles"]["secrets"]


def test_a_second_registry_host_is_refused(tmp_path):
    result, _ = _render_roles(tmp_path, {
        "nomad_servers": {"server1": _host("10.0.0.10")},
        "registry": {"server1": None, "reg2": _host("10.0.0.20")},
    })  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0
    refusal = re.search(r"put exactly one host in the registry group \(now: ([^)]*)\)", output)
    assert refusal, output
    assert sorted(refusal.group(1).split(", ")) == ["reg2", "server1"]


def test_the_pki_checks_fall_back_to_the_agents_own_defaults():
    """The pki role compares its datacenter and region with the consul and nomad roles'
    variables, falling back to their defaults when unset: those fallbacks must be the
    defaults."""
    roles = REPO_ROOT / "playbooks" / "roles"
    checks = (roles / "pki" / "tasks" / "asserts.yml").read_text()
    for role, name in (("consul", "consul_datacenter"), ("nomad", "nomad_region")):
        defaults = yaml.safe_load((roles / role / "defaults" / "main.yml").read_text())
        assert f"{name} | default('{defaults[name]}')" in checks, (role, name)


def test_a_mismatched_region_and_an_unknown_architecture_are_refused(tmp_path):
    result, written = _render_roles(tmp_path, {
        "nomad_servers": {"server1": _host("10.0.0.10", nomad_region="europe")},
        "nomad_clients": {"arm1": _host("10.0.0.11", ansible_architecture="armv7l"),
                          "arm2": _host("10.0.0.12", ansible_architecture="armv7l",
                                        nomad_arch="arm"),
                          "x86": _host("10.0.0.13", ansible_architecture="x86_64")},
    })  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "arm1 is armv7l, and Nomad releases are chosen for x86_64" in output, output
    assert "but the agents use dc1 and europe" in output, output
    # A machine Nomad publishes releases for, or an architecture named by hand, goes on.
    assert set(written) == {"arm2", "x86"}, output


def test_the_apps_domain_makes_traefiks_default_rule_and_stays_data(tmp_path):
    # Several edges: certificates by DNS-01 (test_several_edges_need_the_dns_challenge…).
    dns = {
        "traefik_acme_challenge": "dns",
        "traefik_acme_dns_provider": "cloudflare",
        "traefik_acme_dns_environment": {"CF_DNS_API_TOKEN": "t"},
    }
    result, written = _render_roles(tmp_path, {
        "nomad_servers": {"server1": _host("10.0.0.10")},
        "edge": {"edge1": _host("10.0.0.21", traefik_apps_domain="apps.example.com", **dns),
                 "edge2": _host("10.0.0.22", **dns),
                 "edge3": _host("10.0.0.23", **dns,
                                traefik_apps_domain="example.com`) || Host(`evil.test")},
    })  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    # A value that would end Traefik's rule and add its own is refused, with the reason.
    assert "traefik_apps_domain as a DNS name" in output, output
    assert "traefik" not in written.get("edge3", {}), output
    rules = {name: written[name]["traefik"]["providers"]["consulCatalog"]["defaultRule"]
             for name in ("edge1", "edge2")}  # fmt: skip
    # Traefik's own template reaches its configuration untouched by Ansible's.
    assert rules == {
        "edge1": "Host(`{{ normalize .Name }}.apps.example.com`)",
        "edge2": "Host(`{{ normalize .Name }}.apps.localhost`)",
    }


def _systemd_environment(text: str) -> dict[str, str]:
    """KEY="value" lines of an EnvironmentFile read as systemd reads double-quoted values."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, quoted = line.split("=", 1)
            assert quoted[0] == quoted[-1] == '"', line
            values[name] = re.sub(r'\\(["\\`$])', r"\1", quoted[1:-1])
    return values


def test_several_edges_need_the_dns_challenge_and_its_credentials_stay_out_of_the_config(
    tmp_path,
):
    hostile = 'a"b\\c`d$e f'
    dns = {
        "traefik_acme_challenge": "dns",
        "traefik_acme_dns_provider": "cloudflare",
        "traefik_acme_dns_environment": {"CF_DNS_API_TOKEN": hostile, "CF_ZONE_API_TOKEN": "z"},
    }
    result, written = _render_roles(tmp_path, {
        "nomad_servers": {"server1": _host("10.0.0.10")},
        "edge": {"edge1": _host("10.0.0.21", **dns), "edge2": _host("10.0.0.22", **dns),
                 "plain": _host("10.0.0.23"),
                 "badname": _host("10.0.0.24", **{**dns, "traefik_acme_dns_environment":
                                                  {"cf-token": "x"}}),
                 "badprovider": _host("10.0.0.25", **{**dns,
                                                      "traefik_acme_dns_provider": "../x"})},
    })  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    # HTTP-01 with five edge hosts is refused with the reason and what to set.
    assert "dns when there is more than one edge host" in output, output
    assert "Set traefik_acme_challenge: dns, traefik_acme_dns_provider" in output, output
    assert "These names are not: cf-token" in output, output
    assert {"edge1", "edge2"} <= set(written), output
    assert not {"plain", "badname", "badprovider"} & {n for n in written if "traefik" in written[n]}
    for name in ("edge1", "edge2"):
        config = written[name]["traefik"]
        acme = config["certificatesResolvers"]["le"]["acme"]
        assert acme["dnsChallenge"] == {"provider": "cloudflare"}
        assert "httpChallenge" not in acme
        assert acme["storage"] == "/var/lib/traefik/acme.json"
        assert hostile not in json.dumps(config) and "CF_DNS_API_TOKEN" not in json.dumps(config)
        env = (tmp_path / "out" / f"{name}-acme.env").read_text()
        assert _systemd_environment(env) == {"CF_DNS_API_TOKEN": hostile, "CF_ZONE_API_TOKEN": "z"}
    tasks = _role_tasks("traefik", "config.yml")
    written_env = next(
        t for t in tasks if t["name"] == "Write the DNS provider's credentials for ACME"
    )
    assert (
        written_env["no_log"] is True and written_env["ansible.builtin.template"]["mode"] == "0600"
    )
    unit = (ROLES / "traefik" / "templates" / "traefik.service.j2").read_text()
    assert "EnvironmentFile={{ _traefik_acme_env_file }}" in unit


def test_the_nomad_api_keeps_client_certificates_with_consul_advertising(tmp_path):
    """Nomad registers no Consul check of an API that wants client certificates (Consul's
    checks present none): the combination kept is mutual TLS on the API, auto_advertise, and
    the TCP checks that remain made against the advertised address (nomad README)."""
    result, written = _render_roles(tmp_path, {
        "nomad_servers": {"server1": _host("10.0.0.10")},
        "nomad_clients": {"app1": _host("10.0.0.11"),
                          "open1": _host("10.0.0.12", nomad_tls_verify_https_client=False)},
    })  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for name, verified in (("server1", True), ("app1", True), ("open1", False)):
        config = written[name]["nomad"]
        assert config["tls"]["http"] is True, name
        assert config["tls"]["verify_https_client"] is verified, name
        assert config["consul"]["auto_advertise"] is True, name
        assert config["consul"]["checks_use_advertise"] is True, name


def test_the_data_plane_interface_is_the_one_holding_the_private_address(tmp_path):
    """From this machine's own network facts: its loopback holds 127.0.0.1; no interface
    holds 192.0.2.77, and that client is refused with the address and the interfaces."""
    result, written = _render_roles(tmp_path, {
        "nomad_servers": {"server1": _host("10.0.0.10")},
        "nomad_clients": {"here": _host("127.0.0.1", nomad_network_interface=""),
                          "named": _host("10.0.0.12", nomad_network_interface="ens5"),
                          "elsewhere": _host("192.0.2.77", nomad_network_interface=""),
                          "hostile": _host("10.0.0.13", nomad_network_interface="eth0 ; x")},
    })  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "no network interface of elsewhere holds its private address 192.0.2.77" in output
    assert re.search(r"interfaces found: [^\n]*\blo 127\.0\.0\.1\b", output), output
    assert "no network interface of hostile" in output, output
    assert set(written) == {"server1", "here", "named"}, output
    assert written["here"]["nomad"]["client"]["network_interface"] == "lo"
    assert written["named"]["nomad"]["client"]["network_interface"] == "ens5"
    assert "network_interface" not in written["server1"]["nomad"].get("client", {})


def test_the_nomad_agents_get_the_consul_roles_token_explicitly(tmp_path):
    result, written = _render_roles(tmp_path, {
        "nomad_servers": {"server1": _host("10.0.0.10", consul_nomad_agents_token="from-consul")},
        "nomad_clients": {"app1": _host("10.0.0.11", consul_nomad_agents_token="from-consul"),
                          "own1": _host("10.0.0.12", consul_nomad_agents_token="from-consul",
                                        nomad_consul_token="operator-given")},
        "edge": {"app1": None},
    })  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    tokens = {name: written[name]["secrets"]["consul"]["token"] for name in written}
    assert tokens == {"server1": "from-consul", "app1": "from-consul", "own1": "operator-given"}
    # One edge host keeps the HTTP challenge, with no credentials file.
    acme = written["app1"]["traefik"]["certificatesResolvers"]["le"]["acme"]
    assert acme["httpChallenge"] == {"entryPoint": "web"} and "dnsChallenge" not in acme
    assert not (tmp_path / "out" / "app1-acme.env").exists()
    # The nomad role never generates a Consul token of its own.
    assert all("consul-nomad.token" not in written[name]["roles"]["secrets"] for name in written)
    consul = _role_tasks("consul", "secrets.yml")
    handed = next(
        t for t in consul if "consul_nomad_agents_token" in str(t.get("ansible.builtin.set_fact"))
    )
    assert handed["no_log"] is True
    assert (
        "_consul_secrets['consul-nomad.token']"
        in handed["ansible.builtin.set_fact"]["consul_nomad_agents_token"]
    )
    nomad = _role_tasks("nomad", "secrets.yml")
    check = next(t for t in nomad if t["name"] == "Check the Nomad agents have their Consul token")
    assert check["ansible.builtin.assert"]["that"] == "_nomad_consul_token | length > 0"
    assert "nomad_consul_acl_enabled" in check["when"]


# A rule of a Consul ACL policy with the comment lines just above it: `name "prefix" {
# policy = "…" }` or `name = "…"`.
_POLICY_RULE_RE = re.compile(
    r'(?m)((?:^#[^\n]*\n)*)^(\w+)(?: "[^"]*")? '
    r'(?:\{\s*policy = "(\w+)"\s*\}|= "(\w+)")'
)


def _policy_rules(text: str) -> list[tuple[str, str, str]]:
    """(comment just above, rule, policy) for each rule of a Consul ACL policy file."""
    return [
        (m.group(1).strip(), m.group(2), m.group(3) or m.group(4))
        for m in _POLICY_RULE_RE.finditer(text)
    ]


def test_the_consul_policy_of_the_nomad_agents_is_hashicorps_minimal_one():
    text = (ROLES / "consul" / "templates" / "acl-nomad.hcl.j2").read_text()
    rules = _policy_rules(text)
    assert [(rule, policy) for _, rule, policy in rules] == [
        ("agent_prefix", "read"), ("node_prefix", "write"), ("service_prefix", "write"),
    ]  # fmt: skip
    assert all(comment for comment, _, _ in rules), "every rule says why it is there"
    # HashiCorp's acl and mesh rules (service mesh, workload identities) stay out, said why.
    assert not re.search(r"(?m)^(acl|mesh)\s*=", text)
    assert 'acl = "write"' in text and 'mesh = "write"' in text
    # A policy whose rules changed is updated on the cluster, not only created when missing.
    script = (ROLES / "consul" / "templates" / "consul-acl-setup.sh.j2").read_text()
    assert '"$consul" acl policy update -name "helios-$name"' in script
    setup = next(t for t in _role_tasks("consul", "service.yml") if "ansible.builtin.command" in t)
    assert "'updated' in _consul_acl_setup.stdout" in setup["changed_when"]


ROLES = REPO_ROOT / "playbooks" / "roles"


def test_the_pki_role_warns_before_the_ca_expires():
    tasks = _role_tasks("pki", "config.yml")
    names = [task["name"] for task in tasks]
    read = tasks[names.index("Read when the CA certificate expires")]
    warn = tasks[names.index("Warn when the CA expires soon (rotate it)")]
    assert names.index("Read the CA certificate") < names.index(read["name"])
    info = read["community.crypto.x509_certificate_info"]
    assert info == {"path": "{{ pki_ca_dir }}/ca.pem",
                    "valid_at": {"warn": "+{{ pki_ca_warn_days | int }}d"}}  # fmt: skip
    assert read["delegate_to"] == "{{ pki_ca_host }}" and read["register"] == "_pki_ca_expiry"
    assert warn["ansible.builtin.debug"]["msg"].startswith("WARNING: pki: the cluster CA")
    assert warn["when"] == (
        "_pki_ca_expiry.valid_at.warn is defined and not _pki_ca_expiry.valid_at.warn"
    )
    defaults = yaml.safe_load((ROLES / "pki" / "defaults" / "main.yml").read_text())
    assert defaults["pki_ca_warn_days"] == 30
    assert "### Rotating the CA" in (ROLES / "pki" / "README.md").read_text()


def _role_tasks(role: str, name: str) -> list[dict]:
    return list(_tasks(yaml.safe_load((ROLES / role / "tasks" / name).read_text())))


@pytest.mark.parametrize("role", ["consul", "nomad", "traefik"])
def test_a_new_binary_restarts_the_agent(role):
    link = next(
        t for t in _role_tasks(role, "install.yml") if t["name"] == f"Link the {role} binary"
    )
    assert link.get("notify") == f"Restart {role}"


@pytest.mark.parametrize("role", ["consul", "nomad"])
def test_server_restarts_are_rolled_one_at_a_time_and_acls_asked_of_the_cluster(role):
    # The handler only flags; restart.yml restarts clients, and walks the servers from one host.
    handlers = yaml.safe_load((ROLES / role / "handlers" / "main.yml").read_text())
    assert [list(h) for h in handlers] == [["name", "ansible.builtin.set_fact"]]
    assert handlers[0]["ansible.builtin.set_fact"] == {f"_{role}_restart_needed": True}
    walk = next(t for t in _role_tasks(role, "restart.yml") if "ansible.builtin.include_tasks" in t)
    assert walk["ansible.builtin.include_tasks"] == "restart-server.yml"
    assert walk["when"] == "inventory_hostname == ansible_play_hosts[0]"
    assert f"groups[{role}_servers_group]" in walk["loop"]
    block = _role_tasks(role, "restart-server.yml")[0]
    assert block["delegate_to"] == f"{{{{ _{role}_server }}}}"
    restart, wait = block["block"]
    assert restart["ansible.builtin.systemd_service"]["state"] == "restarted"
    assert wait["ansible.builtin.uri"]["url"].endswith(f"._{role}_health_url }}}}")
    assert "selectattr('Leader')" in wait["until"] and "selectattr('Healthy')" in wait["until"]
    # No file on the host decides whether the cluster's ACLs are set up: the script runs on
    # every converge and reports a change only when it did something.
    acl = next(t for t in _role_tasks(role, "service.yml") if "ansible.builtin.command" in t)
    assert set(acl["ansible.builtin.command"]) == {"cmd"}, "no creates:/removes: on the ACL setup"
    assert "changed_when" in acl
