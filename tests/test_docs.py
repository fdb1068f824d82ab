"""docs/ is the contract, and these tests keep it true: every signature docs/api.md shows is the
code's (names, order, keyword-only marks, defaults), the command line's flags are the parser's,
the file map of docs/design.md names every module, docs/performance.md's measured figures come
from RESULTS.md, and no page carries the project's history."""
import ast
import builtins
import importlib
import inspect
import re
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
_CALL = re.compile(r"^(class )?(fastbp(?:\.\w+)+)\((.*)\)(?::.*)?(?:\s*->.*)?$")
_METHOD = re.compile(r"^\.(\w+)\((.*?)\)")


def _statements(text):
    """The indented code lines of a markdown page, joined while parentheses are open, comments
    dropped, split at `;` and at ' / ' between methods."""
    out, buf = [], ""
    for line in text.splitlines():
        if not line.startswith("    ") or line.startswith("    -"):
            buf = ""
            continue
        code = line.strip().split("  #")[0].split(" # ")[0].strip()
        buf = f"{buf} {code}".strip() if buf else code
        if buf.count("(") > buf.count(")"):
            continue
        for part in re.split(r";\s+|\s+/\s+(?=\.)", buf):
            out.append(part.strip())
        buf = ""
    return out


def _params(text):
    """A documented parameter list as (name, kind, default or EMPTY)."""
    tree = ast.parse(f"def f({text}): pass").body[0].args
    E, P = inspect.Parameter.empty, inspect.Parameter
    pos = tree.posonlyargs + tree.args
    defaults = [E] * (len(pos) - len(tree.defaults)) + [ast.literal_eval(d)
                                                         for d in tree.defaults]
    out = [(a.arg, P.POSITIONAL_OR_KEYWORD, d) for a, d in zip(pos, defaults)]
    if tree.vararg:
        out.append((tree.vararg.arg, P.VAR_POSITIONAL, E))
    out += [(a.arg, P.KEYWORD_ONLY, E if d is None else ast.literal_eval(d))
            for a, d in zip(tree.kwonlyargs, tree.kw_defaults)]
    if tree.kwarg:
        out.append((tree.kwarg.arg, P.VAR_KEYWORD, E))
    return out


def _actual(obj):
    sig = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values() if p.name != "self"]


def _resolve(qualname):
    """fastbp.a.b as attributes from fastbp, importing a submodule where one is not yet one
    (fastbp.gradcheck is the function, fastbp.torch the module)."""
    parts = qualname.split(".")
    obj = importlib.import_module(parts[0])
    for i, attr in enumerate(parts[1:], 2):
        if not hasattr(obj, attr):
            importlib.import_module(".".join(parts[:i]))
        obj = getattr(obj, attr)
    return obj


def _api_signatures():
    """(where, object, documented parameters) for every call docs/api.md shows."""
    found, owner = [], None
    for stmt in _statements((DOCS / "api.md").read_text()):
        call, method = _CALL.match(stmt), _METHOD.match(stmt)
        if call and "<" not in stmt:
            qual = call.group(2)
            owner = qual if qual.rsplit(".", 1)[-1][:1].isupper() else None
            if call.group(1):               # class X(Base): the base, no parameters
                found.append((qual, qual, None, call.group(3)))
            else:
                found.append((qual, qual, call.group(3), None))
        elif method and owner:
            found.append((f"{owner}.{method.group(1)}", f"{owner}.{method.group(1)}",
                          method.group(2), None))
    return found


_SIGNATURES = _api_signatures()


def test_api_md_shows_signatures_of_every_part():
    names = {q for q, *_ in _SIGNATURES}
    assert len(_SIGNATURES) >= 40
    for qual in ("fastbp.softmax_nll", "fastbp.linear_head", "fastbp.MLP.step",
                 "fastbp.naive.mlp_loss_grad", "fastbp.gradcheck", "fastbp.torch.LinearHead",
                 "fastbp.jax.linear_head", "fastbp.dask.LinearClassifier.fit",
                 "fastbp.set_num_threads", "fastbp.JacobianTooLarge"):
        assert qual in names, qual


@pytest.mark.parametrize("where, qual, params, base", _SIGNATURES, ids=[s[0] for s in _SIGNATURES])
def test_api_md_signature_is_the_codes(where, qual, params, base):
    module = qual.split(".")[1]
    if module in ("torch", "jax") or qual.startswith("fastbp.dask"):
        pytest.importorskip({"torch": "torch", "jax": "jax"}.get(module, "dask"))
    obj = _resolve(qual)
    if base is not None:
        assert issubclass(obj, getattr(builtins, base, None) or _resolve(base))
        return
    assert _params(params) == _actual(obj), f"docs/api.md's {where}({params})"


def _cli_flags(text):
    """{subcommand: set of --flags} from docs/api.md section 7 (a command's usage may go on
    over several indented lines)."""
    flags, command = {}, None
    for line in text.splitlines():
        m = re.match(r"^    fastbp (\w+)\b(.*)$", line)
        if m:
            command = m.group(1)
            flags[command] = set()
        elif not line.startswith("     ") or line.strip().startswith("#"):
            if not line.startswith("     "):
                command = None
            continue
        if command:
            usage = (m.group(2) if m else line).split("#")[0]
            flags[command] |= set(re.findall(r"\[(--[\w-]+)", usage))
    return flags


def test_cli_flags_in_api_md_are_the_parsers():
    from fastbp.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    section = (DOCS / "api.md").read_text().split("## 7.")[1].split("\n## ")[0]
    documented = _cli_flags(section)
    assert set(documented) == set(sub.choices)
    for name, p in sub.choices.items():
        actual = {s for a in p._actions for s in a.option_strings if s.startswith("--")}
        assert documented[name] == actual - {"--help"}, name
        assert f"[{name}]" not in section


def test_cli_exit_codes_are_the_documented_ones():
    section = (DOCS / "api.md").read_text().split("## 7.")[1].split("\n## ")[0]
    assert "exit code 2" in section and "exit code 1" in section
    source = inspect.getsource(importlib.import_module("fastbp.cli").main)
    assert "TrainingDiverged" in source and "else 2" in source


def test_design_md_file_map_names_every_module():
    """The file map (the page's indented block) names every module, not the prose only."""
    text = "\n".join(line for line in (DOCS / "design.md").read_text().splitlines()
                     if line.startswith("    "))
    for path in sorted((ROOT / "fastbp").rglob("*.py")):
        rel = path.relative_to(ROOT / "fastbp")
        if rel.name == "__init__.py" and rel.parent != Path("backends/numba"):
            continue
        name = rel.as_posix() if rel.name != "__init__.py" else rel.parent.as_posix() + "/"
        assert name.rsplit("/", 1)[-1] in text, f"docs/design.md's file map lacks {name}"


def test_docs_carry_no_history():
    """History belongs in CHANGELOG.md: the pages describe what is, not when it came."""
    assert (ROOT / "CHANGELOG.md").is_file()
    words = re.compile(r"\b(this wave|issue \d+|last session|this session|was \d|now (?:run|is)"
                       r" faster than before)\b", re.IGNORECASE)
    for page in sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]:
        hits = [line for line in page.read_text().splitlines() if words.search(line)]
        assert not hits, f"{page.name}: {hits[:3]}"


def test_math_md_sections_cited_in_the_code_exist():
    headings = re.findall(r"^## (\d+)\.", (DOCS / "math.md").read_text(), re.MULTILINE)
    for path in sorted((ROOT / "fastbp").rglob("*.py")):
        for number in re.findall(r"math\.md,? (?:section|s\.) (\d+)", path.read_text()):
            assert number in headings, f"{path.name} cites docs/math.md section {number}"


def test_performance_md_quotes_results_md_never_retypes_it():
    """Every `>` line of docs/performance.md is a line of benchmarks/RESULTS.md, copied; a line
    that names RESULTS.md carries no figure of its own (a quote below it does)."""
    results = set((ROOT / "benchmarks" / "RESULTS.md").read_text().splitlines())
    perf = (DOCS / "performance.md").read_text().splitlines()
    quotes = [line[2:] for line in perf if line.startswith("> ")]
    assert len(quotes) >= 20
    stale = [q for q in quotes if q not in results]
    assert not stale, f"quotes no longer in RESULTS.md (rerun make bench, renew): {stale[:3]}"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import quotes         # benchmarks/quotes.py, which make bench runs: it would change nothing
    lines = (ROOT / "benchmarks" / "RESULTS.md").read_text().splitlines()
    assert quotes.renew(perf, lines) == perf
    figure = re.compile(r"\d[\d,.]*\s?(?:µs|us|ms|%)|\d(?:×|x\b)(?!\s*\d)")
    retyped = [line for line in perf if "RESULTS.md" in line and not line.startswith(">")
               and figure.search(line)]
    assert not retyped, retyped


def test_a_quote_under_a_heading_quotes_that_sections_rows():
    """A quoted row below a quoted "####" heading is that section's row, found again there
    even across a bare ">" line (the C1k and V tables once showed the T rows of the same
    labels), and a row of another section under the heading is refused."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import quotes
    results = ["#### T float64", "", "| row | t=1 |", "| c | 2 (1.0x) |",
               "#### V float32", "", "| row | t=1 |", "| c | 1,271,786 (1.0x) |"]
    page = ["> #### V float32", ">", "> | row | t=1 |", "> | c | 9 (1.0x) |", "", "> | c | 9 |"]
    assert quotes.renew(page, results) == [
        "> #### V float32", ">", "> | row | t=1 |", "> | c | 1,271,786 (1.0x) |", "",
        "> | c | 2 (1.0x) |"]     # (out of any heading's block: the first row of that label)
    perf = (DOCS / "performance.md").read_text().splitlines()
    scope = None
    for line in perf:
        if not line.startswith(">"):
            scope = None
        elif line.startswith("> #"):
            i = results_lines().index(line[2:])
            scope = results_lines()[i:next((j for j in range(i + 1, len(results_lines()))
                                            if results_lines()[j].startswith("#")), None)]
        elif scope is not None and line[2:].strip():
            assert line[2:] in scope, f"quoted out of its heading's section: {line}"


def results_lines():
    return (ROOT / "benchmarks" / "RESULTS.md").read_text().splitlines()


_SECTION_REF = re.compile(r"((?:docs/)?[\w./-]+\.md)(?:'s)?,? \"([^\"]+)\"")


def test_every_section_a_readme_or_doc_names_exists():
    """A page naming a section of another as `FILE.md, "Heading"` (or `FILE.md's "Heading"`)
    names a heading that file has (the README once sent readers to a RESULTS.md section that
    does not exist)."""
    pages = [ROOT / "README.md", *DOCS.glob("*.md")]
    missing = []
    for page in pages:
        text = " ".join(page.read_text().split())        # references wrap over lines
        for name, heading in _SECTION_REF.findall(text):
            target = next((p for p in (ROOT / name, ROOT / "benchmarks" / name, DOCS / name)
                           if p.is_file()), None)
            if target is None:
                continue
            headings = [line.lstrip("#").strip() for line in target.read_text().splitlines()
                        if line.startswith("#")]
            if not any(h.startswith(heading) or heading in h for h in headings):
                missing.append(f"{page.name}: {name}, \"{heading}\"")
    assert not missing, missing
