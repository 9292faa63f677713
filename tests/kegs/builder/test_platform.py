"""Platform facts: what `when` conditions and the store hash see."""

from __future__ import annotations

from pathlib import Path

import pytest

from undistro.kegs import Platform, detect

RELEASES = [
    ('ID=debian\nVERSION_ID="12"\n', "debian"),
    ("ID=ubuntu\nID_LIKE=debian\n", "debian"),
    ('ID="rocky"\nID_LIKE="rhel centos fedora"\n', "redhat"),
    ("ID=fedora\n", "redhat"),
    ("ID=alpine\n", "alpine"),
    ('ID=opensuse-tumbleweed\nID_LIKE="opensuse suse"\n', "suse"),
    ("ID=nixos\n", "nixos"),
    ("", "unknown"),
]


@pytest.mark.parametrize(("release", "family"), RELEASES)
def test_family_from_os_release_under_a_root(tmp_path: Path, release: str, family: str) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text(release)
    assert detect(str(tmp_path)).os_family == family


def test_facts_of_the_policy_win_over_the_host() -> None:
    facts = {"os": {"id": "rocky", "family": "rhel"}, "arch": "arm64"}
    assert Platform.from_facts(facts) == Platform("linux", "redhat", "aarch64")
    assert Platform.from_facts({}) == detect()
