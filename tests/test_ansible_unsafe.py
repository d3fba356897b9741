"""Every string Helios hands Ansible is data, never a template: `{{ 42*42 }}` stays itself.

The rendered inventory and extra variables are checked as text and loaded by Ansible's own
YAML loader, then a real `ansible-playbook` run (through the same driver the worker uses,
on localhost) writes back what it received.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from panel.drivers.ansible import AnsibleDriver, Scrubber, summarise_event
from panel.render.ansible import InventoryHost, RenderError, render_extravars, render_inventory

HERE = Path(__file__).resolve().parent
TEMPLATE = "{{ 42*42 }}"
EVALUATED = "1764"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")


def _strings(value: object) -> list[str]:
    """Every string inside a JSON-like value (keys included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (*_strings(key), *_strings(item))]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return []


NASTY = [
    TEMPLATE,
    "{% for x in range(3) %}{{ x }}{% endfor %}",
    "{{ lookup('pipe', 'id') }}",
    "{# comment #}",
    "${HOME} $(id) `id`",
]


def _ansible_available() -> str | None:
    if shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) is None:
        return "ansible-playbook is not installed in the virtualenv (pip install -e '.[dev]')"
    return None


def _load_with_ansible(text: str, tmp_path: Path):
    """Load YAML the way Ansible loads inventory and vars files (trusted as templates)."""
    from ansible.parsing.dataloader import DataLoader

    path = tmp_path / "rendered.yml"
    path.write_text(text)
    try:
        return DataLoader().load_from_file(str(path), trusted_as_template=True)
    except TypeError:  # ansible-core before 2.19 has no trust marks: everything is templated
        return DataLoader().load_from_file(str(path))


def _is_unsafe(value) -> bool:
    """True when Ansible's templating leaves ``value`` as it is (it is data, not a template)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    return Templar(loader=DataLoader(), variables={}).template(value) == value


def _control_is_templated(tmp_path: Path) -> None:
    """The same text without !unsafe IS evaluated: the checks above can tell the difference."""
    loaded = _load_with_ansible(f"x: '{TEMPLATE}'\n", tmp_path)
    assert not _is_unsafe(loaded["x"])


def _walk_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk_strings(item)


def test_every_string_in_the_inventory_is_tagged_unsafe(tmp_path):
    host = InventoryHost(
        name="node-1",
        address="192.0.2.7",
        groups=("nomad_servers", "edge"),
        variables={"helios_note": TEMPLATE, "helios_nested": {"a": [TEMPLATE, 3, True]}},
    )
    text = render_inventory([host], {"helios_group_note": TEMPLATE})
    assert EVALUATED not in text
    assert f"!unsafe '{TEMPLATE}'" in text
    _control_is_templated(tmp_path)
    loaded = _load_with_ansible(text, tmp_path)
    node = loaded["all"]["children"]["nomad_servers"]["hosts"]["node-1"]
    assert node["helios_note"] == TEMPLATE
    assert node["helios_nested"]["a"][0] == TEMPLATE
    assert node["helios_nested"]["a"][1:] == [3, True]
    strings = list(_walk_strings(loaded))
    assert strings and all(_is_unsafe(s) for s in strings)
    # The host is listed in its second group without repeating its variables.
    assert loaded["all"]["children"]["edge"]["hosts"] == {"node-1": None}


@pytest.mark.parametrize("value", NASTY)
def test_extravars_are_unsafe_whatever_the_value(value, tmp_path):
    text = render_extravars({"helios_note": value, "helios_list": [value]})
    loaded = _load_with_ansible(text, tmp_path)
    assert loaded == {"helios_note": value, "helios_list": [value]}
    assert all(_is_unsafe(s) for s in _walk_strings(loaded))


@pytest.mark.parametrize("name", ["Bad", "1x", "a-b", "{{ x }}", "", "x" * 200])
def test_variable_names_must_be_identifiers(name):
    with pytest.raises(RenderError):
        render_extravars({name: "v"})


def test_unknown_groups_and_duplicates_are_refused():
    with pytest.raises(RenderError, match="unknown groups"):
        render_inventory([InventoryHost(name="a", address="192.0.2.1", groups=("web",))])
    twice = InventoryHost(name="a", address="192.0.2.1", groups=("edge",))
    with pytest.raises(RenderError, match="unique"):
        render_inventory([twice, twice])


@pytest.mark.parametrize(
    "connection",
    [
        {"address": "::1%$(id)"},
        {"address": "10.0.0.1;id"},
        {"address": "-oProxyCommand=id"},
        {"address": "$(id)"},
        {"address": "10.0.0.1\nid"},
        {"ssh_user": "root -oProxyCommand=id"},
        {"ssh_user": "$(id)"},
        {"ssh_port": "22 -oProxyCommand=id"},
        {"ssh_port": 0},
        {"ssh_port": True},
    ],
    ids=str,
)
def test_connection_values_that_reach_ssh_are_checked_again(connection):
    # They reach ssh's command line and its ProxyCommand (a shell): never unvalidated.
    host = InventoryHost(**{"name": "n1", "address": "192.0.2.1", "groups": ("edge",),
                            **connection})  # fmt: skip
    with pytest.raises(RenderError, match="not a valid"):
        render_inventory([host])


def test_scrubber_masks_raw_and_encoded_secrets():
    secret = "s3cr3t-value-with/+chars="
    scrubber = Scrubber([secret])
    import base64
    import urllib.parse

    for form in (secret, base64.b64encode(secret.encode()).decode(),
                 urllib.parse.quote(secret, safe=""), secret.encode().hex()):  # fmt: skip
        assert secret not in scrubber.text(f"before {form} after")
        assert form not in scrubber.text(f"before {form} after")
    result = {"changed": True, "msg": secret}
    event = {"event": "runner_on_ok", "counter": 3, "stdout": f"ok: {secret}",
             "event_data": {"host": "h", "task": "t", "res": result}}  # fmt: skip
    summary = summarise_event(event, scrubber)
    assert secret not in json.dumps(summary)
    assert summary["kind"] == "changed" and summary["host"] == "h"


def test_a_real_run_receives_the_literal_strings(tmp_path):
    reason = _ansible_available()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "out"
    out.mkdir()
    host = InventoryHost(
        name=f"odd-{TEMPLATE}",
        address="127.0.0.1",
        groups=("nomad_servers",),
        variables={
            "helios_note": TEMPLATE,
            "helios_nested": {"list": [TEMPLATE, "{{ lookup('pipe', 'id') }}"]},
            "ansible_python_interpreter": sys.executable,
        },
    )
    driver = AnsibleDriver(HERE / "provision", work_dir=tmp_path / "work")
    events = []
    with driver.workspace() as workspace:
        result = driver.run(
            workspace,
            playbook="echo_vars.yml",
            inventory=render_inventory([host], {"helios_group_note": TEMPLATE}),
            extravars=render_extravars({"echo_vars_out": str(out)}),
            on_event=events.append,
        )
    assert result.ok, events
    assert result.recap[host.name]["changed"] == 1
    written = list(out.iterdir())
    assert len(written) == 1
    text = written[0].read_text()
    assert EVALUATED not in text and "uid=" not in text
    received = json.loads(text)
    assert received == {
        "inventory_hostname": host.name,
        "note": TEMPLATE,
        "nested": {"list": [TEMPLATE, "{{ lookup('pipe', 'id') }}"]},
        "group_note": TEMPLATE,
        "message": f"note is {TEMPLATE}",
    }
    # Every text the run reported, timestamps aside (a time may hold the digits by chance).
    texts = [text for text in _strings(events) if not TIMESTAMP.fullmatch(text)]
    assert not [text for text in texts if EVALUATED in text]
    assert {e["kind"] for e in events} >= {"play", "task", "changed", "recap"}
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())
