#!/usr/bin/env python3
"""Pack what a GPU worker needs into carries of the lent machine's size, and unpack it there.

The project's GPU machine takes at most 64 MiB per call (the working tree included) and keeps /tmp only while calls
follow each other. So every group (a wheelhouse's parts, or files packed by `stage`) is cut into parts with
SHA256SUMS, and `split` deals the parts of all groups into `carry-N/<group>/` folders of at most `--mb` MiB: one
device call per folder, `receive.sh` on the worker merging them, `unpack` checking and extracting each group.

    python scripts/gpu_worker/carry.py stage OUT/NAME PATH...      # PATHs (links followed) → tar.xz parts
    python scripts/gpu_worker/carry.py split OUT GROUP_DIR... [--mb 60]
    python scripts/gpu_worker/carry.py unpack GROUP_DIR DEST         # on the worker: check every part, extract
Standard library only (the worker's plain python runs it).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wheelhouse import check, cut  # noqa: E402

FILES_PREFIX = "files.tar.xz.part-"


def stage(out: Path, paths: list[Path], part_bytes: int) -> list[Path]:
    """PATHs, each under its own name, → one tar.xz cut into parts in `out` (links followed: a model folder of links
    travels as its bytes)."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        sys.exit(f"carry stage: {', '.join(missing)} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "files.tar.xz"
        with stream.open("wb") as sink:
            names = [arg for p in paths for arg in ("-C", str(p.resolve().parent), p.resolve().name)]
            tar = subprocess.Popen(["tar", "-c", "-h", *names], stdout=subprocess.PIPE)
            subprocess.run(["xz", "-1", "-T0", "-c"], stdin=tar.stdout, stdout=sink, check=True)
            if tar.wait() != 0:
                sys.exit("carry stage: tar failed")
        return cut(stream, out, part_bytes, FILES_PREFIX)


def split(out: Path, groups: list[Path], carry_bytes: int) -> list[Path]:
    """Deal every group's parts into carry-1, carry-2, ... (first fit, in order), each ≤ carry_bytes; every carry
    that holds a part of a group also holds the group's SHA256SUMS and PARTS."""
    bins: list[list[tuple[Path, Path]]] = []
    sizes: list[int] = []
    for group in groups:
        if problems := check(group):
            sys.exit(f"carry split: {group}: " + "; ".join(problems))
        for part in sorted(p for p in group.iterdir() if ".part-" in p.name):
            size = part.stat().st_size
            if size > carry_bytes:
                sys.exit(f"carry split: {part} is {size / 2**20:.1f} MiB, more than --mb allows; cut it smaller")
            index = next((i for i, used in enumerate(sizes) if used + size <= carry_bytes), None)
            if index is None:
                bins.append([])
                sizes.append(0)
                index = len(bins) - 1
            bins[index].append((group, part))
            sizes[index] += size
    shutil.rmtree(out, ignore_errors=True)
    carries = []
    for number, parts in enumerate(bins, 1):
        carry = out / f"carry-{number}"
        for group, part in parts:
            (carry / group.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(part, carry / group.name / part.name)
            for meta in ("SHA256SUMS", "PARTS"):
                shutil.copy2(group / meta, carry / group.name / meta)
        carries.append(carry)
    return carries


def unpack(group: Path, dest: Path) -> None:
    if problems := check(group):
        sys.exit(f"carry unpack: {group} is incomplete: " + "; ".join(problems))
    dest.mkdir(parents=True, exist_ok=True)
    parts = sorted(p for p in group.iterdir() if ".part-" in p.name)
    cat = subprocess.Popen(["cat", *map(str, parts)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-xJ", "-C", str(dest)], stdin=cat.stdout, check=True)
    cat.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_stage = sub.add_parser("stage", help="pack files into a group of parts")
    p_stage.add_argument("out", type=Path, help="the group's folder (its name names the group)")
    p_stage.add_argument("paths", type=Path, nargs="+")
    p_stage.add_argument("--part-mb", type=int, default=30, help="largest part in MiB (default 30)")
    p_split = sub.add_parser("split", help="deal groups' parts into carry-N folders")
    p_split.add_argument("out", type=Path, help="where carry-1, carry-2, ... go (replaced)")
    p_split.add_argument("groups", type=Path, nargs="+")
    p_split.add_argument("--mb", type=int, default=60, help="largest carry in MiB (default 60: 64 less the tree)")
    p_unpack = sub.add_parser("unpack", help="check a received group and extract it")
    p_unpack.add_argument("group", type=Path)
    p_unpack.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    for name in ("part_mb", "mb"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be a positive number of MiB")
    if args.command == "stage":
        parts = stage(args.out, args.paths, args.part_mb * 2**20)
        print(f"carry: {args.out.name}: {len(parts)} parts, {sum(p.stat().st_size for p in parts) / 2**20:.1f} MiB")
    elif args.command == "split":
        for carry in split(args.out, args.groups, args.mb * 2**20):
            size = sum(p.stat().st_size for p in carry.rglob("*") if p.is_file())
            print(f"carry: {carry.name}: {', '.join(sorted(g.name for g in carry.iterdir()))} ({size / 2**20:.1f} MiB)")
    else:
        unpack(args.group, args.dest)
        print(f"carry: {args.group.name} unpacked into {args.dest}")


if __name__ == "__main__":
    main()
