"""The README's configuration table and `fwatchdog --help` must list the same variables."""
import re
import subprocess

from conftest import BIN, ROOT


def help_names():
    out = subprocess.run([BIN, "--help"], capture_output=True, text=True, timeout=5).stdout
    names = set()
    for line in out.splitlines():
        m = re.match(r"^  ([A-Za-z_]+(?:, [A-Za-z_]+)*)\s{2,}", line)
        if m and m.group(1) != "VARIABLE":
            names.update(n.strip() for n in m.group(1).split(","))
    return names


def readme_names():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([A-Za-z_]+)`", first_cell))
    return names


def test_help_lists_settings():
    names = help_names()
    assert {"fprocess", "mode", "exec_timeout", "max_inflight", "cgi_response"} <= names


def test_readme_table_matches_help():
    assert help_names() == readme_names()
