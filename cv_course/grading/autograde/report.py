"""What the instructor sees after a run: :func:`summary` (printed) and
:func:`write_report` (``report.md`` with ``scores.png``, a histogram of every
graded cell's score, the slowest submissions and the similarity flags)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from nbgrader.api import Gradebook

from .coordinator import Course, Outcome
from .similarity import similar_pairs

# Error names that mean "grading stepped in", with what the report calls them.
INCIDENTS = {"GradingIntegrityError": "tamper scan", "KernelDied": "kernel died",
             "CellTimeoutError": "cell timeout", "MemoryLimit": "memory limit",
             "SubmissionNotRun": "not run"}


def incidents(files: dict[str, bytes]) -> list[tuple[str, str, str]]:
    """(cell, kind, first line of the message) for each incident in autograded notebooks."""
    out = []
    for name, data in files.items():
        if not name.endswith(".ipynb"):
            continue
        for i, cell in enumerate(json.loads(data).get("cells", [])):
            where = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or f"cell {i}"
            for o in cell.get("outputs", []):
                kind = INCIDENTS.get(o.get("ename", "")) if o.get("output_type") == "error" else None
                if kind:
                    text = (o.get("evalue") or (o.get("traceback") or [""])[-1]).strip().splitlines()
                    out.append((where, kind, text[0][:160] if text else ""))
    return out


def summary(outcome: Outcome) -> str:
    graded = [r for r in outcome.results if r.graded]
    failed = [r for r in outcome.results if not r.graded]
    lines = [f"{outcome.assignment}: {len(graded)} graded, {len(failed)} not graded, "
             f"{len(outcome.skipped)} skipped (already graded; --force regrades) in {outcome.seconds:.0f} s"]
    if graded:
        secs = [r.seconds for r in graded]
        rate = 60 * len(graded) / max(outcome.seconds, 1e-9)
        lines.append(f"  time per submission: median {statistics.median(secs):.1f} s, max {max(secs):.1f} s; "
                     f"{rate:.1f} submissions/min overall")
    for r in failed:
        lines.append(f"  NOT GRADED {r.student}: {r.reason}")
    for r in graded:
        if r.reason:
            lines.append(f"  {r.student}: could not be run, every graded cell scored zero ({r.reason})")
    counts: dict[str, int] = {}
    for r in graded:
        for _, kind, _ in incidents(r.files):
            counts[kind] = counts.get(kind, 0) + 1
    if counts:
        lines.append("  cells stopped by grading: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                     + " (see the report)")
    return "\n".join(lines)


def cell_scores(db_url: str, assignment: str) -> dict[str, list[float]]:
    """notebook/cell -> fractions of the cell's points, one per graded submission."""
    out: dict[str, list[float]] = {}
    with Gradebook(db_url) as gb:
        for sub in gb.assignment_submissions(assignment):
            for nb in sub.notebooks:
                for g in nb.grades:
                    if g.max_score:
                        out.setdefault(f"{nb.name}/{g.name}", []).append((g.score or 0.0) / g.max_score)
    return out


def plot_histogram(scores: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(scores), 1)
    fig, axes = plt.subplots(n, 1, figsize=(6, 1.6 * n + 0.6), sharex=True, squeeze=False)
    for ax, (cell, values) in zip(axes[:, 0], sorted(scores.items())):
        ax.hist(values, bins=[i / 10 for i in range(11)], color="tab:blue", edgecolor="white")
        ax.set_ylabel("students")
        ax.set_title(cell, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("fraction of the cell's points")
    fig.suptitle("Scores per graded cell", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(root: Path, outcome: Outcome, folder: Path) -> Path:
    """Write ``folder/report.md`` and ``folder/scores.png``; return the report's path."""
    course = Course.load(root)
    folder.mkdir(parents=True, exist_ok=True)
    scores = cell_scores(course.dirs.db_url, outcome.assignment)
    plot_histogram(scores, folder / "scores.png")
    md = [f"# Autograding {outcome.assignment}", "", "```", summary(outcome), "```", "",
          "![Scores per graded cell: a pile at 0 for one cell is a check to look at](scores.png)", "",
          "| cell | submissions | mean fraction | at zero |", "| --- | --- | --- | --- |"]
    for cell, values in sorted(scores.items()):
        md.append(f"| {cell} | {len(values)} | {statistics.mean(values):.2f} | {sum(v == 0 for v in values)} |")
    md += ["", "## Cells stopped by grading", "", "| student | cell | what | message |", "| --- | --- | --- | --- |"]
    for r in sorted(outcome.results, key=lambda r: r.student):
        for cell, kind, text in incidents(r.files):
            md.append(f"| {r.student} | {cell} | {kind} | {text.replace('|', '/')} |")
    md += ["", "## Slowest submissions", "", "| student | seconds | worker |", "| --- | --- | --- |"]
    for r in sorted(outcome.results, key=lambda r: -r.seconds)[:10]:
        md.append(f"| {r.student} | {r.seconds:.1f} | {r.worker} |")
    md += ["", "## Similar solutions (for review, never penalised)", "",
           "Token fingerprints (winnowing) of each answer cell, compared between students and with the "
           "reference (the source notebook's solution and `cv_course`'s function of the same name). "
           "Short answers to small exercises are often alike: read them before concluding anything.", "",
           "| cell | student | with | similarity |", "| --- | --- | --- | --- |"]
    for cell, a, b, sim in similar_pairs(course, outcome.assignment):
        md.append(f"| {cell} | {a} | {b} | {sim:.2f} |")
    path = folder / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path
