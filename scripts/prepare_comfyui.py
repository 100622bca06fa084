"""Prepare a ComfyUI checkout that is not on the package registry, to run the suite against it.

    python scripts/prepare_comfyui.py GIT_DIR DEST [--rev REV]

Copies the tree of ``REV`` (default ``HEAD``) from a git directory (a bare clone or snapshot,
no work tree needed) into ``DEST``. Blobs the snapshot lacks (large files such as tokenizer
JSONs) are skipped and listed, so a partial snapshot still gives a runnable server; ``git
archive`` would stop at the first one. When ``torchaudio`` cannot be imported here (no build
for this torch), a ``torchaudio`` package whose functions raise is written into ``DEST``:
ComfyUI imports it at start-up, and its directory is first on ``sys.path`` when ``main.py``
runs, so ComfyUI starts and only its audio nodes fail. Then run the suite with
``FF_COMFYUI=DEST``. Idempotent: a stamp in ``DEST`` names the commit it holds.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

STAMP = ".ff-prepared"
SHIM_VERSION = "shim-2"  # bump when the shim changes: re-prepares
TORCHAUDIO_SHIM = '''"""Written by FaithfulFaces' scripts/prepare_comfyui.py: no torchaudio build for this torch.

ComfyUI imports torchaudio (and its functional / transforms modules) at start-up; this lets it
start. Using anything from it raises ImportError.
"""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def missing(*args, **kwargs):
        raise ImportError(f"torchaudio.{name}: torchaudio is not installed for this torch build")

    return missing
'''
TORCHAUDIO_MODULES = ("__init__.py", "functional.py", "transforms.py")


def git(git_dir: Path, *args: str) -> bytes:
    """Run ``git --git-dir=git_dir args``; stdout as bytes."""
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True).stdout


def tree_entries(git_dir: Path, rev: str) -> list[tuple[str, str, str]]:
    """``(mode, sha, path)`` of every blob in ``rev`` (submodules and links included as modes)."""
    out = git(git_dir, "ls-tree", "-r", "-z", rev).decode()
    entries = []
    for record in filter(None, out.split("\0")):
        meta, path = record.split("\t", 1)
        mode, kind, sha = meta.split()
        if kind == "blob":
            entries.append((mode, sha, path))
    return entries


def present_blobs(git_dir: Path, shas: list[str]) -> set[str]:
    """The subset of ``shas`` whose objects the git directory actually holds."""
    query = subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "--batch-check"],
                           input="\n".join(shas).encode(), capture_output=True, check=True).stdout.decode()
    return {line.split()[0] for line in query.splitlines() if not line.endswith("missing")}


def extract(git_dir: Path, rev: str, dest: Path) -> list[str]:
    """Write the tree of ``rev`` into ``dest``; returns the paths skipped for missing blobs."""
    entries = tree_entries(git_dir, rev)
    present = present_blobs(git_dir, [sha for _, sha, _ in entries])
    skipped = []
    for mode, sha, path in entries:
        if sha not in present:
            skipped.append(path)
            continue
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        content = git(git_dir, "cat-file", "blob", sha)
        if mode == "120000":
            target.symlink_to(content.decode())
            continue
        target.write_bytes(content)
        if mode == "100755":
            target.chmod(0o755)
    return skipped


def needs_torchaudio_shim() -> bool:
    try:
        return importlib.util.find_spec("torchaudio") is None
    except (ImportError, ValueError):
        return True


def prepare(git_dir: Path, dest: Path, rev: str = "HEAD") -> Path:
    """Extract ``rev`` into ``dest`` (unless its stamp already names that commit) and add the shim."""
    commit = git(git_dir, "rev-parse", f"{rev}^{{commit}}").decode().strip()
    if (dest / STAMP).is_file() and (dest / STAMP).read_text().split() == [commit, SHIM_VERSION]:
        print(f"{dest}: already holds {commit}")
        return dest
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    skipped = extract(git_dir, commit, partial)
    for path in skipped:
        print(f"skipped (blob not in the snapshot): {path}")
    if needs_torchaudio_shim():
        (partial / "torchaudio").mkdir()
        for module in TORCHAUDIO_MODULES:
            (partial / "torchaudio" / module).write_text(TORCHAUDIO_SHIM)
        print("wrote a torchaudio shim (no torchaudio build for this torch): audio nodes will fail")
    (partial / STAMP).write_text(f"{commit} {SHIM_VERSION}\n")
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    print(f"{dest}: ComfyUI at {commit} ({len(skipped)} files skipped); run the suite with FF_COMFYUI={dest}")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("git_dir", type=Path, help="a git directory holding ComfyUI (bare clone or snapshot)")
    parser.add_argument("dest", type=Path, help="where to write the checkout (outside this repository)")
    parser.add_argument("--rev", default="HEAD", help="commit, tag or branch (default HEAD)")
    args = parser.parse_args(argv)
    prepare(args.git_dir.resolve(), args.dest.resolve(), args.rev)
    return 0


if __name__ == "__main__":
    sys.exit(main())
