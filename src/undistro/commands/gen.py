"""``undistro gen list|switch|rollback|diff``, ``undistro gc`` and
``undistro keg pack|install|keygen``: generations and the binary cache.

Everything heavy (PyNaCl, zstandard, tarfile, urllib) is imported inside
the command functions.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from undistro.commands._groups import command_group
from undistro.commands._time import stamp
from undistro.errors import UsageError

_RAW = argparse.RawDescriptionHelpFormatter
# Spelled here too: importing undistro.kegs to read them would load the
# whole packager for 'undistro --help'. tests/kegs/gen/test_gen_cli.py
# checks they agree.
PROFILES = "/var/lib/undistro/profiles"
GCROOTS = "/var/lib/undistro/gcroots"
STORE = "/opt/undistro/store"
TRUSTED_KEYS = "/etc/undistro/trusted-keys"

GEN_HELP = f"""\
The kegs a machine runs form a profile ({PROFILES}/NAME); each change of
that set is a new generation, switched by one atomic rename of the
'current' symlink. Put PROFILE/current/bin on PATH.

examples:
  undistro gen list --root /tmp/img
  undistro gen diff 3 4
  undistro gen switch 3
  undistro gen rollback --profile tools
"""

GC_HELP = f"""\
Delete generations beyond the last K of each profile (never a current one),
then every store path that neither a remaining generation nor a gc root
(ROOT{GCROOTS}: one per keg `undistro keg build` made, dropped with
`undistro keg unroot`) reaches through its runtime closure. Every path
removed is named; --dry-run names them and removes nothing.

examples:
  undistro gc --dry-run --root /tmp/img
  undistro gc --keep-last 3
  undistro gc --store /opt/other-store --root /tmp/img

The store is ROOT{STORE} unless --store is given.
"""

KEG_HELP = f"""\
examples:
  undistro keg keygen --out /etc/undistro/cache.key      # and cache.key.pub
  undistro keg pack /opt/undistro/store/<hash>-hello-2.12 --key cache.key --out /srv/cache
  undistro keg pack /tmp/img/opt/undistro/store/*-zlib-* --key cache.key --out /srv/cache
  undistro keg install hello --from /srv/cache --root /tmp/img2
  undistro keg install hello-2.12 --from http://peer:8080/ --trusted-key cache.key.pub

A node trusts the keys in ROOT{TRUSTED_KEYS}/*.pub and those given with
--trusted-key. NAME may be a name, name-version, store hash or base name.
"""


COMMANDS = ("gen", "gc", "keg")
"""The commands ``register`` adds (the CLI builds only what a run needs)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gen = sub.add_parser(
        "gen", help="list, switch, roll back and compare generations", description=GEN_HELP,
        formatter_class=_RAW,
    )  # fmt: skip
    verbs = gen.add_subparsers(dest="gen_verb", metavar="VERB")
    gen.set_defaults(func=lambda _args: _usage(gen))

    p = _verb(verbs, "list", "list the generations of a profile")
    p.set_defaults(func=cmd_list)
    p = _verb(verbs, "switch", "make generation N current")
    p.add_argument("number", metavar="N")
    p.set_defaults(func=cmd_switch)
    p = _verb(verbs, "rollback", "switch to the generation before the current one")
    p.set_defaults(func=cmd_rollback)
    p = _verb(verbs, "diff", "show kegs added, removed and changed from A to B")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.set_defaults(func=cmd_diff)

    gc = sub.add_parser(
        "gc", help="remove unreferenced store paths", description=GC_HELP, formatter_class=_RAW
    )
    gc.add_argument("--keep-last", type=int, metavar="K", help="keep the K newest generations")
    gc.add_argument(
        "--dry-run", "-n", action="store_true", help="say what would go; change nothing"
    )
    _root_option(gc)
    _store_option(gc)
    gc.set_defaults(func=cmd_gc)

    keg = command_group(sub, "keg", "build, list, pack and install kegs", "Kegs and artifacts.")
    p = _verb(keg, "pack", "pack store paths into signed artifacts", KEG_HELP, profile=False)
    p.add_argument("paths", nargs="+", metavar="STOREPATH")
    p.add_argument("--key", required=True, metavar="KEYFILE", help="secret key to sign with")
    p.add_argument("--out", required=True, metavar="CACHEDIR", help="cache directory to write")
    p.set_defaults(func=cmd_pack)
    p = _verb(keg, "install", "install a keg and its closure, verified", KEG_HELP, profile=False)
    p.add_argument("ref", metavar="NAME")
    p.add_argument("--from", dest="source", required=True, metavar="CACHE", help="dir or URL")
    p.add_argument(
        "--trusted-key", action="append", default=[], metavar="PUBFILE", help="also trust this key"
    )
    _store_option(p)
    p.set_defaults(func=cmd_install)
    p = keg.add_parser(
        "keygen", help="create an Ed25519 signing key pair", description=KEG_HELP,
        formatter_class=_RAW,
    )  # fmt: skip
    p.add_argument("--out", required=True, metavar="FILE", help="secret key; FILE.pub is public")
    p.set_defaults(func=cmd_keygen)


def _verb(
    verbs: Any, name: str, help: str, epilog: str = GEN_HELP, *, profile: bool = True
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = verbs.add_parser(
        name, help=help, description=help[0].upper() + help[1:] + ".", epilog=epilog,
        formatter_class=_RAW,
    )  # fmt: skip
    _root_option(p)
    if profile:
        p.add_argument(
            "--profile",
            default="default",
            metavar="NAME|DIR",
            help=f"profile name under ROOT{PROFILES}, or a directory (default: default)",
        )
    return p


def _root_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default="/", metavar="DIR", help="work under DIR (image, tests)")


def _store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=STORE, metavar="DIR", help=f"store (default {STORE})")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# -- commands -------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    profile = _profile(args)
    gens = profile.list()
    if not gens:
        print(f"no generations in {profile.dir}")
        return 0
    for g in gens:
        when = stamp(g.created)
        kegs = " ".join(k.label for k in g.kegs) or "(empty)"
        print(f"{'*' if g.current else ' '} {g.number:>4}  {when}  {kegs}")
    return 0


def cmd_switch(args: argparse.Namespace) -> int:
    profile = _profile(args)
    number = _number(args.number)
    profile.switch(number)
    print(f"switched {profile.dir} to generation {number}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    profile = _profile(args)
    before = profile.current_number()
    now = profile.rollback()
    print(f"rolled back {profile.dir} from generation {before} to {now}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    d = _profile(args).diff(_number(args.a), _number(args.b))
    for k in d.removed:
        print(f"- {k.label}")
    for k in d.added:
        print(f"+ {k.label}")
    for old, new in d.changed:
        what = new.version if old.version != new.version else f"{new.version} ({new.hash[:8]})"
        print(f"~ {old.name} {old.version} -> {what}")
    if not (d.removed or d.added or d.changed):
        print("no difference")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from undistro.kegs._closure import rebase
    from undistro.kegs._gc import collect_garbage, profiles_in

    root = _root(args)
    store = rebase(root, args.store)
    profiles = profiles_in(rebase(root, PROFILES), root=root)
    gcroots = rebase(root, GCROOTS)
    report = collect_garbage(
        store,
        profiles,
        keep_last=args.keep_last,
        dry_run=args.dry_run,
        gcroots=gcroots,
        final_store=args.store,
    )
    verb = "would remove" if args.dry_run else "removed"
    for where, numbers in report.generations.items():
        print(f"{verb} generations {', '.join(map(str, numbers))} of {where}")
    for name in report.removed:
        print(f"{verb} {os.path.join(args.store, name)}")
    for name in report.rooted:
        print(f"kept {os.path.join(args.store, name)}: gc root {os.path.join(GCROOTS, name)}")
    for name in report.stale_roots:
        print(f"gc root {os.path.join(GCROOTS, name)}: its keg is gone (undistro keg unroot it)")
    size = _size(report.freed_bytes)
    held = f" ({len(report.rooted)} by gc roots)" if report.rooted else ""
    print(f"{verb} {len(report.removed)} store paths ({size}), kept {len(report.kept)}{held}")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from undistro.kegs._artifact import pack
    from undistro.kegs._closure import rebase

    root = _root(args)
    paths = [p if root is None or p.startswith(root + "/") else rebase(root, p) for p in args.paths]
    for packed in pack(paths, args.key, args.out):
        print(f"packed {packed.basename} ({_size(packed.size)}) into {args.out}")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from undistro.kegs._artifact import install
    from undistro.kegs._closure import rebase
    from undistro.kegs._signing import trusted_keys

    root = _root(args)
    trusted = trusted_keys(rebase(root, TRUSTED_KEYS), args.trusted_key)
    store = rebase(root, args.store)
    installed = install(args.ref, args.source, store, trusted, final_store=args.store)
    for name in installed:
        print(f"installed {os.path.join(args.store, name)}")
    if not installed:
        print(f"{args.ref}: already in {args.store}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from undistro.kegs._signing import generate_keypair

    public = generate_keypair(args.out, comment=os.path.basename(args.out))
    print(f"secret key: {args.out} (keep it private)")
    print(f"public key: {args.out}.pub")
    print(public)
    return 0


# -- helpers --------------------------------------------------------------------


def _root(args: argparse.Namespace) -> str | None:
    return None if args.root in ("", "/") else os.path.abspath(args.root)


def _profile(args: argparse.Namespace) -> Any:
    from undistro.kegs._closure import rebase
    from undistro.kegs._generations import Profile

    root = _root(args)
    name = args.profile
    path = os.path.abspath(name) if "/" in name else rebase(root, f"{PROFILES}/{name}")
    return Profile(path, root=root)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"a generation is a number from 1 up, got {text!r}")
    return int(text)
