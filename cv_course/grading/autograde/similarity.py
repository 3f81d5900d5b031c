"""Near-identical answers, listed for review: winnowing fingerprints.

Schleimer, Wilkerson & Aiken, "Winnowing: local algorithms for document
fingerprinting" (SIGMOD 2003), the algorithm of MOSS. An answer cell becomes a
token sequence in which the names the student chose are all ``N`` (renaming
variables changes nothing) while keywords, operators and attribute names
(``torch.argsort``) stay; every run of ``K`` tokens is hashed, and of every
``W`` consecutive hashes the smallest is kept. Two answers that share a copied
passage of at least ``K + W - 1`` tokens share at least one fingerprint
(the guarantee of the paper). Similarity is the Jaccard index of the two sets.

Flags are never a penalty: small exercises have few good answers.
"""

from __future__ import annotations

import ast
import io
import itertools
import keyword
import re
import tokenize
import zlib
from pathlib import Path

import nbformat

K, W = 10, 5  # tokens per hashed run; hashes per window
THRESHOLD = 0.7  # Jaccard index from which a pair is listed
MIN_FINGERPRINTS = 8  # shorter answers (the untouched stub, one-liners) are never listed
_MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*\n?", re.MULTILINE)
PACKAGE = Path(__file__).resolve().parents[2]  # cv_course/


def tokens(source: str) -> list[str]:
    """Python tokens with chosen names as ``N``, numbers ``0``, strings ``S``; comments dropped."""
    out, after_dot = [], False
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER):
                continue
            if tok.type == tokenize.NAME and not keyword.iskeyword(tok.string) and not after_dot:
                text = "N"
            elif tok.type == tokenize.NUMBER:
                text = "0"
            elif tok.type == tokenize.STRING:
                text = "S"
            else:
                text = tok.string if tok.type != tokenize.NEWLINE else "\n"
            out.append(text)
            after_dot = tok.string == "."
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # an unfinished cell: the tokens read so far
    return out


def fingerprints(source: str) -> set[int]:
    """The winnowed hashes of ``source``'s token K-grams."""
    toks = tokens(source)
    hashes = [zlib.crc32("\x1f".join(toks[i:i + K]).encode()) for i in range(len(toks) - K + 1)]
    if len(hashes) <= W:
        return set(hashes)
    return {min(hashes[i:i + W]) for i in range(len(hashes) - W + 1)}


def jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def answers(notebook: Path) -> dict[str, str]:
    """grade_id -> source of each answer (solution) cell, solution markers removed."""
    nb = nbformat.read(notebook, as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: _MARKERS.sub("", c.source) for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}


def package_functions(names: set[str]) -> dict[str, str]:
    """``cv_course.module.name`` -> source, for top-level functions called one of ``names``
    (the grading package excepted)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "grading" in path.relative_to(PACKAGE).parts:
            continue
        text = path.read_text()
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef) and node.name in names:
                module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
                out[f"{module}.{node.name}"] = ast.get_source_segment(text, node)
    return out


def _defined(source: str) -> set[str]:
    try:
        return {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    except SyntaxError:
        return set()


def similar_pairs(course, assignment: str, threshold: float = THRESHOLD) -> list[tuple[str, str, str, float]]:
    """(cell, student, other student or reference, similarity), most similar first."""
    prints: dict[str, dict[str, set[int]]] = {}  # cell -> who -> fingerprints
    for student in course.students(assignment):
        for nb in sorted(course.folder("submitted", student, assignment).glob("*.ipynb")):
            for cell, src in answers(nb).items():
                prints.setdefault(f"{nb.stem}/{cell}", {})[student] = fingerprints(src)
    references: dict[str, dict[str, set[int]]] = {}
    for nb in sorted(course.folder("source", ".", assignment).glob("*.ipynb")):
        for cell, src in answers(nb).items():
            refs = {"reference solution": fingerprints(src)}
            refs.update({name: fingerprints(code) for name, code in package_functions(_defined(src)).items()})
            references[f"{nb.stem}/{cell}"] = refs
    out = []
    for cell, who in prints.items():
        who = {s: f for s, f in who.items() if len(f) >= MIN_FINGERPRINTS}
        for (a, fa), (b, fb) in itertools.combinations(sorted(who.items()), 2):
            if (sim := jaccard(fa, fb)) >= threshold:
                out.append((cell, a, b, sim))
        for a, fa in who.items():
            for ref, fr in references.get(cell, {}).items():
                if (sim := jaccard(fa, fr)) >= threshold:
                    out.append((cell, a, ref, sim))
    return sorted(out, key=lambda t: (-t[3], t[0], t[1], t[2]))
