"""Resolution with resolvelib: newest fitting versions, platform and variant
conditions, and conflicts told as the chain of requirements behind them."""

from __future__ import annotations

from pathlib import Path

import pytest

from undistro.errors import ResolutionError, UsageError
from undistro.kegs import Platform, RecipeBook, parse_request, resolve

DEBIAN = Platform("linux", "debian", "x86_64")
REDHAT = Platform("linux", "redhat", "x86_64")
ARM = Platform("linux", "debian", "aarch64")


def recipe(directory: Path, name: str, versions: list[str], extra: str = "") -> None:
    text = f'name = "{name}"\n'
    for i, version in enumerate(versions):
        text += f'[versions."{version}"]\nurl = "https://e.org/{name}-{version}.tgz"\n'
        text += f'sha256 = "{i:064x}"\n'
    text += extra
    if "[build]" not in extra:
        text += '\n[build]\nsystem = "make"\n'
    (directory / f"{name}.toml").write_text(text)


def chosen(directory: Path, *requests: str, platform: Platform = DEBIAN) -> dict[str, str]:
    book = RecipeBook([str(directory)])
    resolution = resolve([parse_request(r) for r in requests], book, platform)
    return {name: str(node.version) for name, node in resolution.nodes.items()}


def test_newest_version_that_fits_is_chosen(tmp_path: Path) -> None:
    recipe(tmp_path, "lua", ["5.3.6", "5.4.4", "5.4.6"])
    assert chosen(tmp_path, "lua") == {"lua": "5.4.6"}
    assert chosen(tmp_path, "lua@5.3") == {"lua": "5.3.6"}
    assert chosen(tmp_path, "lua@<5.4.5") == {"lua": "5.4.4"}
    assert chosen(tmp_path, "lua@5.4.4") == {"lua": "5.4.4"}


def test_dependencies_follow_constraints_and_backtrack(tmp_path: Path) -> None:
    recipe(tmp_path, "zlib", ["1.2.13", "1.3.1"])
    recipe(tmp_path, "png", ["1.6"], '[dependencies.run]\nzlib = "<1.3"\n')
    recipe(
        tmp_path,
        "app",
        ["1.0", "2.0"],
        '[dependencies.run]\npng = "*"\n[dependencies.build]\nzlib = "*"\n',
    )
    assert chosen(tmp_path, "app") == {"app": "2.0", "png": "1.6", "zlib": "1.2.13"}


def test_when_dependency_is_skipped_on_the_wrong_platform(tmp_path: Path) -> None:
    recipe(tmp_path, "libselinux", ["3.5"])
    recipe(tmp_path, "libbsd", ["0.11"])
    recipe(
        tmp_path,
        "tool",
        ["1.0"],
        "[dependencies.run]\n"
        'libselinux = { version = "*", when = { os_family = "redhat" } }\n'
        'libbsd = { version = "*", when = { os_family = "debian", arch = ["x86_64"] } }\n',
    )
    assert chosen(tmp_path, "tool", platform=DEBIAN) == {"tool": "1.0", "libbsd": "0.11"}
    assert chosen(tmp_path, "tool", platform=REDHAT) == {"tool": "1.0", "libselinux": "3.5"}
    assert chosen(tmp_path, "tool", platform=ARM) == {"tool": "1.0"}
    # the skipped recipe is not even read: a broken one does not matter on Debian
    (tmp_path / "libselinux.toml").write_text("this is not toml = = =")
    assert chosen(tmp_path, "tool", platform=DEBIAN) == {"tool": "1.0", "libbsd": "0.11"}


def test_variant_conditions_and_requests(tmp_path: Path) -> None:
    recipe(tmp_path, "openssl", ["3.0"])
    recipe(
        tmp_path,
        "curl",
        ["8.0"],
        "[variants]\nssl = true\n"
        '[dependencies.run]\nopenssl = { version = "*", when = { variants = { ssl = true } } }\n',
    )
    book = RecipeBook([str(tmp_path)])
    with_ssl = resolve([parse_request("curl")], book, DEBIAN)
    assert set(with_ssl.nodes) == {"curl", "openssl"}
    assert with_ssl.nodes["curl"].run_deps == ("openssl",)
    without = resolve([parse_request("curl", ["ssl=false"])], book, DEBIAN)
    assert set(without.nodes) == {"curl"} and without.nodes["curl"].variants == {"ssl": False}


def test_a_conflict_is_told_as_the_chain_of_requirements(tmp_path: Path) -> None:
    recipe(tmp_path, "zlib", ["1.2.13", "1.3.1"])
    recipe(tmp_path, "png", ["1.6"], '[dependencies.run]\nzlib = ">=1.3"\n')
    recipe(tmp_path, "app", ["1.0"], '[dependencies.run]\npng = "*"\nzlib = "<1.3"\n')
    with pytest.raises(ResolutionError) as info:
        chosen(tmp_path, "app")
    message = str(info.value)
    assert message.splitlines()[0] == (
        "cannot choose a version of zlib that satisfies every requirement:"
    )
    assert "you asked for app → app 1.0 needs zlib <1.3" in message
    assert "you asked for app → app 1.0 needs png → png 1.6 needs zlib >=1.3" in message
    assert "(zlib has versions: 1.3.1, 1.2.13)" in message


def test_conflicting_variants_and_direct_misses(tmp_path: Path) -> None:
    recipe(tmp_path, "zlib", ["1.3.1"], "[variants]\nstatic = false\n")
    recipe(
        tmp_path,
        "tool",
        ["1.0"],
        '[dependencies.run]\nzlib = { version = "*", variants = { static = true } }\n',
    )
    book = RecipeBook([str(tmp_path)])
    # unasked, a variant takes what the dependent needs...
    assert resolve([parse_request("tool"), parse_request("zlib")], book, DEBIAN).nodes[
        "zlib"
    ].variants == {"static": True}
    # ...asked otherwise, the two requests collide
    with pytest.raises(ResolutionError) as info:
        resolve([parse_request("tool"), parse_request("zlib", ["static=false"])], book, DEBIAN)
    assert "you asked for zlib with static=false" in str(info.value)
    assert "you asked for tool → tool 1.0 needs zlib with static=true" in str(info.value)
    with pytest.raises(ResolutionError, match=r"you asked for zlib >=2"):
        chosen(tmp_path, "zlib@>=2")
    with pytest.raises(ResolutionError, match=r"zlib has no variant 'shared' \(known: static\)"):
        resolve([parse_request("zlib", ["shared=true"])], RecipeBook([str(tmp_path)]), DEBIAN)
    with pytest.raises(ResolutionError, match=r"variant 'static' is true or false"):
        resolve([parse_request("zlib", ["static=maybe"])], RecipeBook([str(tmp_path)]), DEBIAN)


def test_missing_recipe_for_a_dependency(tmp_path: Path) -> None:
    recipe(tmp_path, "tool", ["1.0"], '[dependencies.run]\nghost = "*"\n')
    with pytest.raises(
        ResolutionError, match=r"tool 1\.0 needs ghost, and there is no recipe for it"
    ):
        chosen(tmp_path, "tool")


@pytest.mark.parametrize("text", ["", "Lua", "lua@>>1", "lua@5..4", "a b"])
def test_bad_requests_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_request(text)
    with pytest.raises(UsageError, match="expected NAME=VALUE"):
        parse_request("lua", ["static"])


def test_a_dependency_cycle_is_named(tmp_path: Path) -> None:
    recipe(tmp_path, "egg", ["1.0"], '[dependencies.build]\nhen = "*"\n')
    recipe(tmp_path, "hen", ["1.0"], '[dependencies.run]\negg = "*"\n')
    resolution = resolve([parse_request("egg")], RecipeBook([str(tmp_path)]), DEBIAN)
    with pytest.raises(ResolutionError, match="dependency cycle: egg → hen → egg"):
        resolution.order()
