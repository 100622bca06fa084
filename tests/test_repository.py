"""The repository speaks for itself: no references a reader cannot follow, no dead code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".js", ".json", ".toml", ".txt", ".yaml", ".yml", ".sh", ".cfg", ""}
# Places outside the repository, and tracker numbers (the word issue or ticket with a number, or a
# hash and digits in prose). A hash followed by
# digits right after a word character or a quote (colours "#999", "photo.png#0") is not prose.
FORBIDDEN = re.compile(
    r"DESIGN\.md|\.\./shared|/work/|\bissues? #?\d+|\btickets? #?\d+|\bPR #?\d+|(?:^|[\s(\[,;])#\d+\b",
    re.IGNORECASE | re.MULTILINE,
)


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split()
    return [REPO / name for name in listed if Path(name).suffix in TEXT_SUFFIXES and (REPO / name).is_file()]


def test_the_pattern_catches_what_it_should():
    for text in ("see DESIGN" + ".md §3", "../" + "shared/notes", "fixed in issue " + "11", "as in Issue " + "#4", "(" + "#12)", "see " + "#7 there"):
        assert FORBIDDEN.search(text), text
    for text in ('color="#999999"', "Tom_Hanks_54745.png#0", "paper §3.4", "issue a clear error", "step #"):
        assert not FORBIDDEN.search(text), text


def test_no_file_names_a_tracker_number_or_a_file_outside_the_repository():
    files = _tracked_text_files()
    assert len(files) > 50
    found = []
    for path in files:
        if path == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if FORBIDDEN.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert not found, "write what the reader needs into docs/ instead of pointing elsewhere:\n" + "\n".join(found)


def test_no_dead_code():
    result = subprocess.run([sys.executable, "-m", "vulture"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and not result.stdout.strip(), (
        "vulture (configured in pyproject.toml [tool.vulture]) found unused code (or is not installed: pip install -r requirements-dev.txt); delete it, or add a name "
        f"that something outside Python's view uses to ignore_names there:\n{result.stdout}{result.stderr}")
