"""The teacher's kit (notebooks/TEACHING.md): every walkthrough notebook opens with its learning objectives,
prerequisites and estimated time, ends with its key takeaways, numbers its exercises and has a worked,
executed solutions notebook that covers each of them; TEACHING.md is linked from the README, defines every
glossary term, lists every walkthrough with the notebook's own time estimate, and links only to files that exist.

Run one notebook's checks with `-k`, e.g. `pytest tests/test_teaching.py -k 03_losses`.
"""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = NOTEBOOKS / "solutions"
TEACHING = NOTEBOOKS / "TEACHING.md"
WALKTHROUGHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
BY_NAME = [pytest.param(path, id=path.stem) for path in WALKTHROUGHS]

# the terms the glossary must define (each inside a bold span of the "## Glossary" section)
GLOSSARY = ["pending token", "draft", "draft depth", "verify", "accept", "correction token", "bonus token",
            "τ", "tau", "conditional", "unconditional", "prefill", "rollback", "MTP depth", "λ", "mtp_loss_scale",
            "shift table"]

OBJECTIVES, PREREQUISITES, TIME = "**Learning objectives.**", "**Prerequisites:**", "**Estimated time:**"
MINUTES = re.compile(r"\*\*Estimated time:\*\*\s*about (\d+) minutes(?:.*?exercises add about (\d+))?", re.S)
EXERCISE = re.compile(r"\*\*Exercise (\d+)\b")          # "**Exercise 1.**" or "**Exercise 1. A title.**"
BULLET = re.compile(r"^\s*[-*] \S", re.M)


def read(path: Path):
    return nbformat.read(path, as_version=4)


def markdown(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def exercises(nb) -> list[int]:
    """The numbers of the walkthrough's "**Exercise N.**" entries, in order."""
    return [int(n) for text in markdown(nb) for n in EXERCISE.findall(text)]


def has_exercises_section(nb) -> bool:
    return any(re.search(r"^#+ .*Exercises?\b", text, re.M) for text in markdown(nb))


def solutions_path(path: Path) -> Path:
    return SOLUTIONS / f"{path.stem}_solutions.ipynb"


def estimate(nb) -> tuple[int, int | None] | None:
    """(minutes reading and running, minutes the exercises add or None) from the first cell."""
    m = MINUTES.search(nb.cells[0].source) if nb.cells else None
    return (int(m.group(1)), int(m.group(2)) if m.group(2) else None) if m else None


@pytest.mark.parametrize("path", BY_NAME)
def test_first_cell_states_objectives_prerequisites_and_time(path):
    first = read(path).cells[0]
    name = path.name
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# "), \
        f"{name}: the first cell must be a markdown cell that opens with the notebook's title ('# NN · ...')"
    text = first.source
    missing = [label for label in (OBJECTIVES, PREREQUISITES, TIME) if label not in text]
    assert not missing, (f"{name}: the first cell lacks {', '.join(missing)}; it must end with the block "
                         f"'{OBJECTIVES} After this notebook you can:' (3-5 bullets), '{PREREQUISITES} ...' and "
                         f"'{TIME} about N minutes (reading and running; the exercises add about M).'")
    at = [text.index(label) for label in (OBJECTIVES, PREREQUISITES, TIME)]
    assert at == sorted(at), f"{name}: the first cell's block must come in the order objectives, prerequisites, time"
    bullets = len(BULLET.findall(text[at[0]:at[1]]))
    assert 3 <= bullets <= 5, f"{name}: the learning objectives have {bullets} bullets; the format asks for 3-5"
    assert estimate(read(path)), (f"{name}: the estimated time must read '{TIME} about N minutes (reading and "
                                  f"running; the exercises add about M).'")
    tail = text[at[2]:].strip().splitlines()
    assert not any(line.startswith("#") for line in tail), \
        f"{name}: the objectives / prerequisites / time block must end the first cell; a heading follows it"


@pytest.mark.parametrize("path", BY_NAME)
def test_last_cell_is_key_takeaways(path):
    nb = read(path)
    last = nb.cells[-1]
    assert last.cell_type == "markdown" and last.source.lstrip().startswith("## Key takeaways"), \
        (f"{path.name}: the last cell must be a markdown cell starting with '## Key takeaways'; it is a "
         f"{last.cell_type} cell starting {last.source.strip()[:60]!r}")
    bullets = len(BULLET.findall(last.source))
    assert 3 <= bullets <= 6, f"{path.name}: the key takeaways have {bullets} bullets; the format asks for 3-6"
    earlier = [i for i, c in enumerate(nb.cells[:-1]) if "## Key takeaways" in c.source]
    assert not earlier, f"{path.name}: '## Key takeaways' appears again in cell(s) {earlier}; keep it in the last cell"


@pytest.mark.parametrize("path", BY_NAME)
def test_exercises_are_numbered_and_have_worked_solutions(path):
    nb = read(path)
    numbers = exercises(nb)
    if has_exercises_section(nb):
        assert numbers, (f"{path.name}: it has an Exercises section, but no numbered exercise; write each as "
                         f"'**Exercise 1.** ...', with a <details><summary>Hint</summary> ... </details> where a "
                         f"step is not obvious")
    if not numbers:
        return
    assert numbers == list(range(1, len(numbers) + 1)), \
        f"{path.name}: the exercises are numbered {numbers}; number them 1, 2, 3, ... once each"
    solution = solutions_path(path)
    assert solution.exists(), (f"{path.name} has {len(numbers)} exercises but no worked solutions: "
                               f"{solution.relative_to(ROOT)} is missing")
    sol = read(solution)
    assert sol.cells and f"../{path.name}" in sol.cells[0].source, \
        f"{solution.name}: the title cell must link back to the walkthrough, (../{path.name})"
    text = "\n".join(markdown(sol))
    uncovered = [n for n in numbers if not re.search(rf"\bExercise {n}\b", text)]
    assert not uncovered, (f"{solution.name} does not cover exercise(s) {uncovered} of {path.name}: each needs a "
                           f"markdown cell 'Exercise N' restating it, then the code that solves it")
    code = [c for c in sol.cells if c.cell_type == "code"]
    unrun = [i for i, c in enumerate(sol.cells) if c.cell_type == "code" and c.execution_count is None]
    assert code and not unrun, (f"{solution.name}: cells {unrun} were never executed; run the notebook and save "
                                f"its outputs")
    errors = [i for i, c in enumerate(sol.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{solution.name}: the saved outputs of cells {errors} are errors"


def test_every_solutions_notebook_belongs_to_a_walkthrough():
    stems = {path.stem for path in WALKTHROUGHS}
    orphans = [p.name for p in SOLUTIONS.glob("*.ipynb") if p.stem.removesuffix("_solutions") not in stems]
    assert not orphans, f"notebooks/solutions/ holds {orphans}, whose walkthrough notebook does not exist"


def test_teaching_guide_exists_and_the_readme_links_it():
    assert TEACHING.exists(), "notebooks/TEACHING.md, the teacher's guide, is missing"
    readme = (ROOT / "README.md").read_text()
    assert "](notebooks/TEACHING.md)" in readme, "README.md must link the teacher's guide: [...](notebooks/TEACHING.md)"


def test_the_glossary_defines_every_term():
    text = TEACHING.read_text()
    m = re.search(r"^## Glossary\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, "notebooks/TEACHING.md has no '## Glossary' section"
    defined = [span.lower() for span in re.findall(r"\*\*(.+?)\*\*", m.group(1), re.S)]
    missing = [term for term in GLOSSARY if not any(term.lower() in span for span in defined)]
    assert not missing, (f"the glossary of notebooks/TEACHING.md does not define {missing}; define each as a "
                         f"bold term followed by its definition")


@pytest.mark.parametrize("path", BY_NAME)
def test_the_guide_lists_the_notebook_with_its_own_time_estimate(path):
    link = f"[`{path.stem}`]({path.name})"
    rows = [line for line in TEACHING.read_text().splitlines() if line.startswith("|") and link in line]
    assert rows, f"notebooks/TEACHING.md's notebook table has no row for {path.name} (a cell {link})"
    row = rows[0]
    minutes = estimate(read(path))
    if minutes is not None:
        wanted = f"{minutes[0]} + {minutes[1]}" if minutes[1] is not None else f"{minutes[0]}"
        assert f"| {wanted} |" in row, (f"notebooks/TEACHING.md lists other minutes for {path.name} than its first "
                                        f"cell estimates ({wanted}: reading and running + exercises): {row}")
    if exercises(read(path)):
        target = f"solutions/{solutions_path(path).name}"
        assert f"({target})" in row, f"notebooks/TEACHING.md's row for {path.name} must link its solutions, {target}"


def test_the_guide_links_only_to_files_that_exist():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", TEACHING.read_text())
    broken = [link for link in links if "://" not in link and not (NOTEBOOKS / link).exists()]
    assert not broken, f"notebooks/TEACHING.md links to files that do not exist: {broken}"
