"""Scenario generator for the one-shot benchmark: N managed files, four tools.

Every tool gets the same promise, written in its own idiom: N files of about
200 bytes, mode 0644, spread over directories and policy files by one
`Layout`. undistro's policy uses paths relative to a root it is given with
`--root`; the peers have no such option, so their policies name absolute
paths under the root they are generated for. The directories are created by
`prepare_root` before the first run, for every tool alike: the benchmark
compares file convergence, and Puppet (unlike CFEngine) would otherwise need
extra directory resources that the others do not.

    python -m bench.scenario --n 100 --out /tmp/scenario   # all four tools
"""

from __future__ import annotations

import argparse
import json
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

FILE_BYTES = 200
MODE = 0o644
DIR_MODE = 0o755
TOOLS = ("undistro", "cfengine", "puppet", "ansible")


@dataclass(frozen=True)
class Layout:
    """How N files are spread: files per directory, files per policy file.

    The default puts 100 files in a directory and 1,000 resources in a
    policy file, so N = 10,000 gives 100 directories and 10 policy files,
    which is what a real policy of that size looks like.
    """

    files_per_dir: int = 100
    files_per_policy_file: int = 1000

    @classmethod
    def parse(cls, text: str) -> Layout:
        """Read `FILES_PER_DIR:FILES_PER_POLICY_FILE`, e.g. `100:1000`."""
        try:
            per_dir, per_file = (int(part) for part in text.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"layout {text!r}: expected FILES_PER_DIR:FILES_PER_POLICY_FILE, e.g. 100:1000"
            ) from None
        if per_dir < 1 or per_file < 1:
            raise argparse.ArgumentTypeError(f"layout {text!r}: both numbers must be >= 1")
        return cls(per_dir, per_file)

    def __str__(self) -> str:
        return f"{self.files_per_dir}:{self.files_per_policy_file}"


@dataclass(frozen=True)
class ManagedFile:
    """One promised file: its path inside the root and its whole content."""

    index: int
    path: str
    content: str


@dataclass(frozen=True)
class Scenario:
    """N managed files laid out by a `Layout`; the tools' writers read this."""

    n: int
    layout: Layout = field(default_factory=Layout)

    @property
    def files(self) -> list[ManagedFile]:
        return [self._file(i) for i in range(1, self.n + 1)]

    @property
    def parts(self) -> list[list[ManagedFile]]:
        """The files grouped as they go into policy files."""
        files = self.files
        step = self.layout.files_per_policy_file
        return [files[i : i + step] for i in range(0, len(files), step)]

    @property
    def dirs(self) -> list[str]:
        """Every directory the files live in, parents first."""
        seen = {"/bench": None}
        for managed in self.files:
            seen[managed.path.rsplit("/", 1)[0]] = None
        return list(seen)

    def drift_target(self) -> ManagedFile:
        """The file the drift-repair phase changes: one in the middle."""
        return self._file(max(1, self.n // 2))

    def _file(self, index: int) -> ManagedFile:
        directory = (index - 1) // self.layout.files_per_dir
        return ManagedFile(index, f"/bench/d{directory:02d}/f{index:05d}", _content(index))


def _content(index: int) -> str:
    """About 200 bytes in four lines; only characters no format must escape."""
    lines = []
    for line in range(4):
        head = f"bench file {index:05d} line {line} "
        lines.append(
            head + "abcdefghijklmnopqrstuvwxyz0123456789"[: FILE_BYTES // 4 - len(head) - 1]
        )
    return "\n".join(lines) + "\n"


def under(root: Path, path: str) -> Path:
    """A scenario path rebased under root (what undistro's --root does)."""
    return root / path.lstrip("/")


def prepare_root(scenario: Scenario, root: Path) -> None:
    """Make an empty root holding the scenario's directories and no files."""
    if root.exists():
        shutil.rmtree(root)
    for directory in scenario.dirs:
        under(root, directory).mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def verify(scenario: Scenario, root: Path) -> list[str]:
    """What is wrong with root's managed files; empty when all promises hold."""
    problems = []
    for managed in scenario.files:
        path = under(root, managed.path)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            content = path.read_text()
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror}")
            continue
        if content != managed.content:
            problems.append(f"{path}: wrong content")
        if mode != MODE:
            problems.append(f"{path}: mode {mode:o}, expected {MODE:o}")
    return problems


def drift(scenario: Scenario, root: Path) -> Path:
    """Edit one managed file in place, as an operator would, and return it."""
    path = under(root, scenario.drift_target().path)
    path.write_text("edited by hand\n")
    return path


# --- writers: one per tool; each returns the file its command takes -------------


def write_undistro(scenario: Scenario, dest: Path, root: Path) -> Path:
    """A policy directory; paths stay relative to the root given by --root."""
    del root
    (dest / "policy").mkdir(parents=True, exist_ok=True)
    (dest / "undistro.toml").write_text('name = "bench"\n')
    for number, part in enumerate(scenario.parts):
        chunks = [
            f'[[file]]\npath = "{f.path}"\ncontent = {_toml_string(f.content)}\nmode = "0644"\n'
            for f in part
        ]
        (dest / "policy" / f"files{number:02d}.toml").write_text("\n".join(chunks))
    return dest


def write_cfengine(scenario: Scenario, dest: Path, root: Path) -> Path:
    """promises.cf with one bundle per policy file, each in its own input."""
    dest.mkdir(parents=True, exist_ok=True)
    bundles = [f"bench{number:02d}" for number in range(len(scenario.parts))]
    for bundle, part in zip(bundles, scenario.parts, strict=True):
        promises = [
            f'    "{under(root, f.path)}"\n'
            f'      create => "true",\n'
            f'      content => "{f.content}",\n'
            f"      perms => bench_mode;\n"
            for f in part
        ]
        text = f"bundle agent {bundle}\n{{\n  files:\n{''.join(promises)}}}\n"
        (dest / f"{bundle}.cf").write_text(text)
    main = dest / "promises.cf"
    main.write_text(
        "body common control\n{\n"
        f"  bundlesequence => {{ {_cf_list(bundles)} }};\n"
        f"  inputs => {{ {_cf_list(f'{dest}/{b}.cf' for b in bundles)} }};\n"
        "}\n\n"
        'body perms bench_mode\n{\n  mode => "0644";\n  rxdirs => "false";\n}\n'
    )
    return main


def write_puppet(scenario: Scenario, dest: Path, root: Path) -> Path:
    """A manifest directory (`puppet apply DIR` reads every .pp in it)."""
    dest.mkdir(parents=True, exist_ok=True)
    for number, part in enumerate(scenario.parts):
        resources = [
            f"file {{ '{under(root, f.path)}':\n"
            f"  ensure  => file,\n"
            f"  content => {_quoted(f.content)},\n"
            f"  mode    => '0644',\n"
            f"}}\n"
            for f in part
        ]
        (dest / f"files{number:02d}.pp").write_text("".join(resources))
    return dest


def write_ansible(scenario: Scenario, dest: Path, root: Path) -> Path:
    """A playbook with one looping `copy` task per policy file.

    Facts are not gathered: nothing here uses them, and this gives Ansible
    its best case (Puppet and CFEngine always discover facts).
    """
    dest.mkdir(parents=True, exist_ok=True)
    tasks = []
    for number, part in enumerate(scenario.parts):
        items = [{"path": str(under(root, f.path)), "content": f.content} for f in part]
        # JSON is YAML, and json.dumps escapes exactly as YAML's double quotes expect.
        (dest / f"files{number:02d}.yml").write_text(
            json.dumps({f"files{number:02d}": items}, indent=1) + "\n"
        )
        tasks.append(
            f"    - name: files{number:02d}\n"
            f"      ansible.builtin.copy:\n"
            f'        dest: "{{{{ item.path }}}}"\n'
            f'        content: "{{{{ item.content }}}}"\n'
            f'        mode: "0644"\n'
            f'      loop: "{{{{ files{number:02d} }}}}"\n'
            f"      loop_control:\n"
            f'        label: "{{{{ item.path | basename }}}}"\n'
        )
    vars_files = "".join(f"    - files{n:02d}.yml\n" for n in range(len(scenario.parts)))
    playbook = dest / "playbook.yml"
    playbook.write_text(
        "- hosts: localhost\n"
        "  gather_facts: false\n"
        f"  vars_files:\n{vars_files}"
        f"  tasks:\n{''.join(tasks)}"
    )
    return playbook


Writer = Callable[[Scenario, Path, Path], Path]
WRITERS: dict[str, Writer] = {
    "undistro": write_undistro,
    "cfengine": write_cfengine,
    "puppet": write_puppet,
    "ansible": write_ansible,
}


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of this alphabet is a TOML basic string


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _cf_list(items: Iterable[str]) -> str:
    return ", ".join(f'"{item}"' for item in items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scenario",
        description="Write the one-shot benchmark's policies, one directory per tool.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python -m bench.scenario --n 1000 --out /tmp/scenario\n"
        "  ls /tmp/scenario/*/policy /tmp/scenario/*/root/bench",
    )
    parser.add_argument("--n", type=int, default=100, help="managed files (default 100)")
    parser.add_argument("--layout", type=Layout.parse, default=Layout(), help="default 100:1000")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated")
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    args = parser.parse_args(argv)
    scenario = Scenario(args.n, args.layout)
    for tool in args.tools.split(","):
        base = args.out.resolve() / tool
        prepare_root(scenario, base / "root")
        entry = WRITERS[tool](scenario, base / "policy", base / "root")
        print(f"{tool}: {entry}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
