"""Renew the RESULTS.md rows a page quotes: ``python benchmarks/quotes.py docs/performance.md``.

A quote is a ``> `` line copied from benchmarks/RESULTS.md. Each is found again in the current
RESULTS.md by its label -- the row's leading cells up to its first figure (a target's name, a
group and backend, a "###" group heading) -- within the group whose heading the quote block
quotes, if it quotes one (the block goes on over bare ``>`` lines, up to the first line that
is no quote); the line is replaced by the current row. `make bench` runs this after
writing RESULTS.md, so the pages quote the last run and nothing is retyped. A label that is no
longer in RESULTS.md stops with its line named (tests/test_docs.py checks every quote too).
"""
import re
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
_FIGURE = re.compile(r"^[\d,.]+(?:\s|x\b|%|$)")


def label(line):
    """A table row's leading cells up to its first figure (a row without one, a target's, by
    its first cell; a header or separator, without any digit, by all of them); any other line
    is its own label."""
    if not line.startswith("|"):
        return (line,)
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    lead = []
    for cell in cells:
        if _FIGURE.match(cell):
            break
        lead.append(cell)
    if lead and len(lead) < len(cells):
        return tuple(lead)
    return tuple(cells) if not any(ch.isdigit() for ch in line) else tuple(cells[:1])


def _find(results, key, lo, hi):
    for i in range(lo, hi):
        if label(results[i]) == key:
            return i
    return None


def renew(page, results):
    """The page's lines with every quote replaced by the row of the same label."""
    out, lo, hi = [], 0, len(results)
    for n, line in enumerate(page, 1):
        if not line.startswith(">"):
            lo, hi = 0, len(results)            # a quote block ends: search everywhere again
            out.append(line)
            continue
        quoted = line[2:]                       # (a bare ">" keeps the block and its group)
        if quoted.startswith("#"):              # a group heading: the rows below are its own
            i = results.index(quoted) if quoted in results else None
            if i is None:
                raise SystemExit(f"line {n}: heading not in RESULTS.md: {quoted}")
            lo, hi = i, next((j for j in range(i + 1, len(results))
                              if results[j].startswith("#")), len(results))
            out.append(line)
            continue
        if not quoted.strip():
            out.append(line)
            continue
        i = _find(results, label(quoted), lo, hi)
        if i is None:
            raise SystemExit(f"line {n}: no row labelled {label(quoted)} in RESULTS.md")
        out.append("> " + results[i])
    return out


def main(paths):
    results = RESULTS.read_text().splitlines()
    for path in paths:
        page = Path(path).read_text().splitlines()
        Path(path).write_text("\n".join(renew(page, results)) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
