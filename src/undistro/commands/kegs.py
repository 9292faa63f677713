"""``undistro recipe new|check``, ``undistro keg build|list``,
``undistro sources fetch|add``.

The kegs machinery (resolvelib, packaging, tarfile) is imported inside the
command functions only.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from undistro.commands._groups import command_group
from undistro.errors import KegError, UsageError

DEFAULT_CACHE = "/var/cache/undistro/sources"
GCROOTS = "/var/lib/undistro/gcroots"  # kegs._gcroots.GCROOTS (a test checks they agree)

RECIPE_EPILOG = """\
examples:
  undistro recipe new hello ~/Downloads/hello-2.10.tar.gz --recipes recipes
  undistro recipe new zlib https://zlib.net/zlib-1.3.1.tar.gz   (sha256 left to fill)
  undistro recipe check examples/recipes

A recipe is one TOML file per package: versions with URL and SHA-256,
variants, build and run dependencies (with `when` conditions) and build
steps. docs/kegs.md is the format reference.
"""

KEG_EPILOG = f"""\
examples:
  undistro keg build hello --recipes examples/recipes
  undistro keg build lua@5.3 lua@5.4 --recipes examples/recipes --root /tmp/img
  undistro keg build zlib --variant static=true --recipes examples/recipes
  undistro keg list --root /tmp/img
  undistro keg roots --root /tmp/img
  undistro keg unroot lua-5.3.6 --root /tmp/img     # gc may now remove it

Kegs go to <store>/<hash>-<name>-<version> (store /opt/undistro/store,
under --root when given); the hash covers recipe, sources, variants,
platform and dependencies. Builds run with no network, a clean environment
and the store read-only but for their staging directory; a failed build
adds nothing to the store. Each keg built is kept from `undistro gc` by a
gc root (ROOT{GCROOTS}/<hash>-<name>-<version>) until `keg unroot` drops it.
"""

SOURCES_EPILOG = """\
examples:
  undistro sources fetch --recipes examples/recipes --mirror .cache/sources/debian
  undistro sources fetch lua --mirror http://127.0.0.1:8000/sources
  undistro sources add --cache .cache/sources ~/Downloads/*.tar.gz

The cache (default ROOT/var/cache/undistro/sources) holds archives by
SHA-256; a download enters it only if its hash is the recipe's. Mirrors
(directories or URLs) are tried in order, then the recipe's own URLs.
"""


COMMANDS = ("recipe", "keg", "sources")
"""The commands ``register`` adds (the CLI builds only what a run needs)."""


def register(sub: Any) -> None:
    recipe = command_group(sub, "recipe", "write and check recipes", "Write and check recipes.")
    new = _parser(recipe, "new", "scaffold a recipe from a name and a source URL", RECIPE_EPILOG)
    new.add_argument("name")
    new.add_argument("url", help="source archive: a local path, file://, http(s):// URL")
    new.add_argument("--version", dest="pkg_version", help="when the file name does not say")
    _recipes_option(new)
    _cache_options(new)
    new.add_argument(
        "--root", default="/", help="add the archive to the cache under DIR (as keg build --root)"
    )
    new.set_defaults(func=run_recipe_new)

    check = _parser(recipe, "check", "validate every recipe of a directory", RECIPE_EPILOG)
    check.add_argument("directory", nargs="?", default="recipes", help="(default: ./recipes)")
    check.set_defaults(func=run_recipe_check)

    keg = command_group(sub, "keg", "build, list, pack and install kegs", "Kegs and artifacts.")
    build = _parser(keg, "build", "resolve, fetch and build kegs into the store", KEG_EPILOG)
    build.add_argument("requests", nargs="+", metavar="NAME[@SPEC]")
    build.add_argument(
        "--variant", action="append", default=[], metavar="K=V", help="for every NAME"
    )
    build.add_argument("--jobs", type=int, default=None, help="parallel jobs (default: cores)")
    build.add_argument(
        "--no-isolate", action="store_true", help="no network namespace (debugging only)"
    )
    build.add_argument(
        "--no-gc-root",
        action="store_true",
        help="leave no gc root: the next gc removes what no generation holds",
    )
    _recipes_option(build)
    _store_options(build)
    _cache_options(build)
    build.set_defaults(func=run_keg_build)

    listing = _parser(keg, "list", "list the kegs in the store", KEG_EPILOG)
    _store_options(listing)
    listing.set_defaults(func=run_keg_list)

    roots = _parser(keg, "roots", "list the gc roots that keep built kegs", KEG_EPILOG)
    roots.add_argument("--root", default="/", help="the gc roots under DIR")
    roots.set_defaults(func=run_keg_roots)

    unroot = _parser(keg, "unroot", "drop a keg's gc root; gc may then remove it", KEG_EPILOG)
    unroot.add_argument("ref", metavar="KEG", help="name, name-version, hash or store path")
    unroot.add_argument("--root", default="/", help="the gc roots under DIR")
    unroot.set_defaults(func=run_keg_unroot)

    sources = command_group(sub, "sources", "fill the source cache", "Fill the source cache.")
    fetch = _parser(sources, "fetch", "fetch and verify every recipe's sources", SOURCES_EPILOG)
    fetch.add_argument("names", nargs="*", help="only these recipes (default: all)")
    _recipes_option(fetch)
    _cache_options(fetch)
    fetch.add_argument("--root", default="/", help="rebase the default cache under DIR")
    fetch.set_defaults(func=run_sources_fetch)

    add = _parser(sources, "add", "import local archives into the cache", SOURCES_EPILOG)
    add.add_argument("files", nargs="+")
    _cache_options(add)
    add.add_argument("--root", default="/", help="rebase the default cache under DIR")
    add.set_defaults(func=run_sources_add)


def _parser(group: Any, name: str, help: str, epilog: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _recipes_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipes",
        action="append",
        default=None,
        metavar="DIR",
        help="recipe directory, repeatable (default: ./recipes)",
    )


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default="/", help="put the store under DIR (staged install)")
    parser.add_argument(
        "--store", default=None, help="store directory (default /opt/undistro/store)"
    )


def _cache_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", default=None, help=f"source cache (default ROOT{DEFAULT_CACHE})")
    parser.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="DIR|URL",
        help="where to look for sources first, repeatable, in order",
    )


# -- commands ------------------------------------------------------------------


def run_recipe_new(args: argparse.Namespace) -> int:
    from undistro.kegs._scaffold import scaffold
    from undistro.kegs._sources import SourceCache

    directory = (args.recipes or ["recipes"])[0]
    path = os.path.join(directory, f"{args.name}.toml")
    if os.path.exists(path):
        raise UsageError(f"{path} exists; edit it, or remove it first")
    cache = SourceCache(_cache_dir(args, args.root))
    mirror_dirs = [m for m in args.mirror if "://" not in m]
    result = scaffold(
        args.name, args.url, version=args.pkg_version, cache=cache, mirror_dirs=mirror_dirs
    )
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "x", encoding="utf-8") as f:
        f.write(result.text)
    os.rename(tmp, path)
    print(f"wrote {path} ({args.name} {result.version}, build system: {result.system})")
    if result.sha256 is None:
        print(
            "sha256 left empty: the archive is not here to hash (nothing is downloaded); "
            f"fill it in, then run: undistro recipe check {directory}"
        )
    return 0


def run_recipe_check(args: argparse.Namespace) -> int:
    from undistro.kegs import detect
    from undistro.kegs._recipe import RecipeBook

    book = RecipeBook([args.directory])
    good, problems = book.check_all(detect())
    for line in problems:
        print(f"undistro: {line}", file=sys.stderr)
    print(f"{len(good)} recipes ok, {len(problems)} problems in {args.directory}")
    return 2 if problems else 0


def run_keg_build(args: argparse.Namespace) -> int:
    from undistro._progress import for_terminal
    from undistro.kegs import (
        Builder,
        RecipeBook,
        SourceCache,
        detect,
        mirrors_from,
        parse_request,
        resolve,
        store_lock,
    )
    from undistro.kegs._gcroots import add_root

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    store = _store(args, create=True)
    requests = [parse_request(text, args.variant) for text in args.requests]
    platform = detect()
    resolution = resolve(requests, RecipeBook(args.recipes or ["recipes"]), platform)
    builder = Builder(
        store,
        SourceCache(_cache_dir(args, args.root)),
        platform,
        mirrors=mirrors_from(args.mirror),
        jobs=args.jobs,
        isolate=not args.no_isolate,
        progress=lambda line: print(line, file=sys.stderr),
        bars=for_terminal(),
    )
    roots_dir = _rebase(args.root, GCROOTS)
    # The store's gc lock (shared) from the build to the roots: a collector
    # cannot take a keg just built for garbage.
    with store_lock(store.physical(store.directory), exclusive=False):
        built = builder.build(resolution)
        if not args.no_gc_root:
            for name in resolution.roots:
                add_root(roots_dir, built[name].path)
    for name in resolution.roots:
        keg = built[name]
        how = f"built in {keg.seconds:.1f} s" if keg.built else "already in the store"
        print(f"{keg.path}  ({how})")
    if not args.no_gc_root:
        print(
            f"gc roots in {roots_dir} keep these from `undistro gc`; "
            "drop one with `undistro keg unroot NAME`",
            file=sys.stderr,
        )
    return 0


def run_keg_roots(args: argparse.Namespace) -> int:
    from undistro.kegs._gcroots import list_roots

    roots_dir = _rebase(args.root, GCROOTS)
    for base in list_roots(roots_dir):
        print(f"{base}  -> {os.readlink(os.path.join(roots_dir, base))}")
    return 0


def run_keg_unroot(args: argparse.Namespace) -> int:
    from undistro.kegs._gcroots import drop_root, list_roots, match_roots

    roots_dir = _rebase(args.root, GCROOTS)
    found = match_roots(roots_dir, args.ref)
    if not found:
        have = ", ".join(list_roots(roots_dir)) or "none"
        raise KegError(f"no gc root matches {args.ref!r} in {roots_dir} (roots: {have})")
    if len(found) > 1:
        raise KegError(
            f"{args.ref!r} matches {len(found)} gc roots: {', '.join(found)}; give one of them"
        )
    drop_root(roots_dir, found[0])
    print(f"dropped the gc root of {found[0]}; `undistro gc` may now remove it")
    return 0


def run_keg_list(args: argparse.Namespace) -> int:
    from undistro.kegs._recipe import show_value

    store = _store(args)
    for path in store.entries():
        meta = store.meta(path)
        variants = " ".join(f"{k}={show_value(v)}" for k, v in sorted(meta.variants.items()))
        print(
            f"{meta.name:<16} {meta.version:<10} {path}" + (f"  [{variants}]" if variants else "")
        )
    return 0


def run_sources_fetch(args: argparse.Namespace) -> int:
    from undistro._progress import for_terminal
    from undistro.kegs import RecipeBook, SourceCache, mirrors_from

    bars = for_terminal()
    book = RecipeBook(args.recipes or ["recipes"])
    cache = SourceCache(_cache_dir(args, args.root))
    mirrors = mirrors_from(args.mirror)
    names = args.names or book.names()
    count = 0
    for name in names:
        recipe = book.get(name)
        for version in recipe.sorted_versions():
            source = recipe.source(version)
            was_there = cache.has(source.sha256)
            cache.fetch(source, mirrors, bars)
            count += 1
            state = "cached" if was_there else "fetched"
            print(f"{state:<8} {name} {version}  {source.filename}  sha256:{source.sha256[:12]}…")
    print(f"{count} sources verified in {cache.directory}")
    return 0


def run_sources_add(args: argparse.Namespace) -> int:
    from undistro.kegs import SourceCache

    cache = SourceCache(_cache_dir(args, args.root))
    for path in args.files:
        sha = cache.add_file(path)
        print(f"{sha}  {path}")
    return 0


def _store(args: argparse.Namespace, *, create: bool = False) -> Any:
    """The store of ``--store`` under ``--root``; ``create`` makes a root
    directory that does not exist yet (a build prepares a new image)."""
    from undistro.kegs import DEFAULT_STORE, Store

    root = args.root
    if create and not os.path.lexists(root):
        try:
            os.makedirs(root)
        except OSError as exc:
            raise UsageError(f"--root {root}: cannot create it: {exc.strerror}") from None
    if not os.path.isdir(root):
        raise UsageError(f"--root {root}: not a directory")
    try:
        return Store(args.store or DEFAULT_STORE, root)
    except KegError as exc:
        raise UsageError(str(exc)) from None


def _cache_dir(args: argparse.Namespace, root: str) -> str:
    if args.cache:
        return str(args.cache)
    return _rebase(root, DEFAULT_CACHE)


def _rebase(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))
