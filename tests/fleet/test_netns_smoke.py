"""The namespace harness itself: hosts reach each other and only each other."""

from __future__ import annotations

import subprocess

from tests.fleet.netns import namespace_hosts


def test_hosts_reach_each_other_and_a_cut_host_does_not() -> None:
    with namespace_hosts(3) as hosts:
        ping = ["ping", "-c", "1", "-W", "1"]
        ok = subprocess.run(hosts[0].argv(*ping, hosts[2].address), capture_output=True)
        assert ok.returncode == 0, ok.stderr
        hosts[2].cut()
        cut = subprocess.run(hosts[0].argv(*ping, hosts[2].address), capture_output=True)
        assert cut.returncode != 0
        hosts[2].mend()
        back = subprocess.run(
            hosts[0].argv(*ping, "-W", "2", hosts[2].address), capture_output=True
        )
        assert back.returncode == 0
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "udt-" not in names
