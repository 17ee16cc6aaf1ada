#!/usr/bin/env python3
"""The offline wheelhouses of a GPU worker: lock them, build them, pack them into parts, check the parts.

Two lanes, each its own environment on the worker (they cannot share one: ModelOpt imports vLLM whenever it is
importable, and vLLM 0.26.0 pins fastapi<0.137 where Prefect needs >=0.139):
- `vllm`: vLLM 0.26.0 (`vllm.in`, less `trimmed.txt` unless --full): scores candidates, serves releases;
- `build`: enginewright's own stack, the `[project] dependencies` of pyproject.toml on the image's torch (Prefect,
  ModelOpt, lm-eval, MLflow, boto3, AIPerf, ...): runs `enginewright build`, `deploy`, `verify` on the worker.

    python scripts/gpu_worker/wheelhouse.py lock [--lane vllm|build] [--full]   # <lane>.lock (needs uv)
    python scripts/gpu_worker/wheelhouse.py build OUT [--lane vllm|build] [--part-mb 60] [--full]
    python scripts/gpu_worker/wheelhouse.py check DIR       # every part present and its sha256 right

`build` downloads (PyPI, on a machine with network) every locked wheel the worker image lacks — the image's own
packages are `image-freeze.txt`, recorded on the project's GPU machine — rewrites each wheel uncompressed (a wheel's
RECORD hashes its files, not its zip entries, so it stays a valid wheel) and packs them into one xz stream cut into
parts of `--part-mb` MiB, with SHA256SUMS and a parts count. `install.sh` beside this script installs them with no
network. Standard library only: it runs on the GPU worker's plain python too.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON_VERSION = "3.12"  # the GPU worker image's python (/opt/torch/.venv/bin/python3, image-freeze.txt)
# pip download's platform tags for that image (Ubuntu 24.04: glibc 2.39, x86-64). pip does not widen a named
# manylinux_2_N tag to older glibc versions, so every one is named.
PLATFORMS = (*(f"manylinux_2_{minor}_x86_64" for minor in range(39, 16, -1)), "manylinux2014_x86_64", "linux_x86_64")
PART_PREFIX = "wheelhouse.tar.xz.part-"
LANES = ("vllm", "build")
PYPROJECT = HERE.parents[1] / "pyproject.toml"


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a lock or freeze file (comments, markers and `@ url` lines ignored)."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in line and " @ " not in line:
            name, version = line.split("==", 1)
            pins[normalize(name)] = version.strip()
    return pins


def read_names(path: Path) -> set[str]:
    return {normalize(line.strip()) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def missing_from_image(lock: dict[str, str], image: dict[str, str]) -> dict[str, str]:
    """The locked packages the image does not hold at the locked version: what the wheelhouse carries."""
    return {name: version for name, version in sorted(lock.items()) if image.get(name) != version}


def lock_file(lane: str, full: bool) -> Path:
    return HERE / (f"{lane}-full.lock" if full else f"{lane}.lock")


def build_requirements(pyproject: Path, image: dict[str, str]) -> list[str]:
    """The build lane's input: the project's own dependencies, with torch pinned to the image's (never carried:
    the worker's CUDA torch is the image's; the dev machines' CPU pin does not apply there)."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    kept = [d for d in dependencies if normalize(re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0]) != "torch"]
    return [*kept, f"torch=={image['torch']}"]


def lock(lane: str, full: bool) -> Path:
    """Resolve a lane for the worker image (its installed versions preferred) into <lane>.lock or <lane>-full.lock."""
    if shutil.which("uv") is None:
        sys.exit("wheelhouse lock: needs uv (pip install uv)")
    out = lock_file(lane, full)
    image = read_pins(HERE / "image-freeze.txt")
    with tempfile.TemporaryDirectory() as tmp:
        prefs = Path(tmp) / out.name  # uv prefers the pins already in its output file: the image's versions
        prefs.write_text("".join(f"{n}=={v}\n" for n, v in image.items()))
        if lane == "vllm":
            source, described = HERE / "vllm.in", "vllm.in" + ("" if full else " less trimmed.txt")
        else:
            source, described = Path(tmp) / "build.in", "pyproject.toml's dependencies on the image's torch"
            source.write_text("\n".join(build_requirements(PYPROJECT, image)) + "\n")
        command = ["uv", "pip", "compile", str(source), "--python-version", PYTHON_VERSION,
                   "--python-platform", "x86_64-manylinux_2_28", "--no-header", "--no-annotate", "-o", str(prefs)]
        if lane == "vllm" and not full:
            overrides = Path(tmp) / "overrides.txt"  # a dependency whose marker never holds is dropped with its own
            overrides.write_text("".join(f'{n} ; sys_platform == "never"\n' for n in sorted(read_names(HERE / "trimmed.txt"))))
            command += ["--override", str(overrides)]
        subprocess.run(command, check=True, capture_output=True)
        header = (f"# Generated by scripts/gpu_worker/wheelhouse.py lock --lane {lane}" + (" --full" if full else "") +
                  f" from {described}, preferring image-freeze.txt.\n")
        out.write_text(header + prefs.read_text())
    return out


def download(pins: dict[str, str], dest: Path) -> None:
    """Each pinned wheel for the worker's python and platform, without dependencies (the lock has them all). A
    package PyPI has only as an sdist (rouge-score, sqlitedict, word2number: pure Python) is built into a wheel
    here, and the download is tried again without it."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    requirements = dest / "requirements.txt"
    pending = dict(pins)
    while pending:
        requirements.write_text("".join(f"{n}=={v}\n" for n, v in pending.items()))
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                 "--only-binary=:all:", "--python-version", PYTHON_VERSION, *platforms,
                                 "-r", str(requirements), "-d", str(dest)], capture_output=True, text=True)
        if result.returncode == 0:
            break
        found = re.search(r"No matching distribution found for (\S+)==", result.stderr)
        name = normalize(found.group(1)) if found else None
        if name not in pending:
            sys.exit(f"wheelhouse: pip download failed:\n{result.stderr[-2000:]}")
        print(f"wheelhouse: {name} {pending[name]} has no wheel on the index; building one from its sdist", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", f"{name}=={pending.pop(name)}",
                        "-w", str(dest)], check=True)
        if not (wheel := next(dest.glob(f"{name.replace('-', '_')}-*.whl"), None)) or not wheel.name.endswith(
                "-py3-none-any.whl") and not wheel.name.endswith("-py2.py3-none-any.whl"):
            sys.exit(f"wheelhouse: {name} built a platform wheel here ({wheel}); it cannot be carried to the worker")
    requirements.unlink()


def store_uncompressed(wheel: Path) -> None:
    """Rewrite a wheel with stored (uncompressed) entries, so that xz, not deflate, compresses its bytes."""
    tmp = wheel.with_suffix(".stored")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            info.compress_type = zipfile.ZIP_STORED  # after reading: the entry is read as it was stored
            dst.writestr(info, data)
    tmp.replace(wheel)


def pack(wheels: Path, out: Path, part_bytes: int) -> list[Path]:
    """wheels/*.whl → one tar.xz cut into parts of at most `part_bytes`, plus SHA256SUMS and PARTS (their count)."""
    out.mkdir(parents=True, exist_ok=True)
    stream = out / "wheelhouse.tar.xz"
    names = sorted(w.name for w in wheels.glob("*.whl"))
    # The xz program, not Python's lzma: it compresses on every core (-T0), several times faster here.
    with stream.open("wb") as sink:
        tar = subprocess.Popen(["tar", "-c", "-C", str(wheels), *names], stdout=subprocess.PIPE)
        subprocess.run(["xz", "-6", "-T0", "-c"], stdin=tar.stdout, stdout=sink, check=True)
        if tar.wait() != 0:
            raise RuntimeError("tar failed while packing the wheelhouse")
    parts = cut(stream, out, part_bytes)
    stream.unlink()
    return parts


def cut(stream: Path, out: Path, part_bytes: int, prefix: str = PART_PREFIX) -> list[Path]:
    """A file → parts of at most `part_bytes` in `out`, with SHA256SUMS and PARTS (their count)."""
    parts = []
    with stream.open("rb") as whole:
        while chunk := whole.read(part_bytes):
            part = out / f"{prefix}{len(parts):03d}"
            part.write_bytes(chunk)
            parts.append(part)
    (out / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.name}\n" for p in parts))
    (out / "PARTS").write_text(f"{len(parts)}\n")
    return parts


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check(directory: Path) -> list[str]:
    """What is wrong with a parts folder: missing parts, wrong sums (empty when it can be installed)."""
    sums = directory / "SHA256SUMS"
    if not sums.is_file():
        return [f"{sums}: missing (not a wheelhouse parts folder)"]
    problems = []
    for line in sums.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        part = directory / name
        if not part.is_file():
            problems.append(f"{name}: missing")
        elif sha256(part) != digest:
            problems.append(f"{name}: sha256 differs (damaged or from another build)")
    return problems


def build(out: Path, part_mb: int, lane: str, full: bool) -> None:
    locked = lock_file(lane, full)
    carried = missing_from_image(read_pins(locked), read_pins(HERE / "image-freeze.txt"))
    with tempfile.TemporaryDirectory() as tmp:
        wheels = Path(tmp)
        print(f"wheelhouse: downloading {len(carried)} wheels the worker image lacks ({locked.name})", flush=True)
        download(carried, wheels)
        got = {normalize(w.name.split("-")[0]) for w in wheels.glob("*.whl")}
        if lacking := sorted(set(carried) - got):
            sys.exit(f"wheelhouse: no wheel downloaded for {', '.join(lacking)}")
        size = sum(w.stat().st_size for w in wheels.glob("*.whl"))
        print(f"wheelhouse: {len(got)} wheels, {size / 2**20:.0f} MiB; recompressing with xz", flush=True)
        for wheel in wheels.glob("*.whl"):
            store_uncompressed(wheel)
        parts = pack(wheels, out, part_mb * 2**20)
    total = sum(p.stat().st_size for p in parts)
    print(f"wheelhouse: {len(parts)} parts of ≤ {part_mb} MiB, {total / 2**20:.0f} MiB in all, in {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_lock = sub.add_parser("lock", help="resolve a lane into <lane>.lock (vllm: trimmed; --full: vllm-full.lock)")
    p_lock.add_argument("--lane", choices=LANES, default="vllm", help="vllm (default) or build")
    p_lock.add_argument("--full", action="store_true", help="vllm lane: keep the packages trimmed.txt leaves out")
    p_build = sub.add_parser("build", help="download, recompress and cut the wheelhouse into parts")
    p_build.add_argument("out", type=Path, help="folder for the parts, SHA256SUMS and PARTS")
    p_build.add_argument("--part-mb", type=int, default=60,
                         help="largest part in MiB (default 60: one part per 64 MiB device carry, beside the "
                              "working tree)")
    p_build.add_argument("--lane", choices=LANES, default="vllm", help="vllm (default) or build")
    p_build.add_argument("--full", action="store_true", help="vllm lane: from vllm-full.lock instead of vllm.lock")
    p_check = sub.add_parser("check", help="every part present with its sha256; exit 1 listing what is not")
    p_check.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    if args.command in ("lock", "build") and args.full and args.lane != "vllm":
        parser.error(f"--full with --lane {args.lane}: only the vllm lane has a trimmed set (trimmed.txt)")
    if args.command == "lock":
        print(lock(args.lane, args.full))
    elif args.command == "build":
        if args.part_mb < 1:
            parser.error(f"--part-mb {args.part_mb}: must be a positive number of MiB")
        build(args.out, args.part_mb, args.lane, args.full)
    else:
        problems = check(args.directory)
        for problem in problems:
            print(problem, file=sys.stderr)
        sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
