"""docs/architecture.md cannot drift silently: its links resolve inside the repository, and every setting, V2
output, /score field, subcommand and format version of the code is named in it. What it says about the code is
checked too, where a claim can be: every ``Class.method`` / ``module.function`` it names exists (read with ast,
classes imported), every name in a code column ("made by", "raised by") is defined, the Environment table's
"used by" matches the per-part environment classes that declare each variable, and the middleware order it
states is the app's. Nothing in the repository sends
readers to ``../shared`` (absent from a clone) except the notes on where CI's KServe CRD comes from."""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import re
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO_ROOT, environment_variables

DOC_PATH = REPO_ROOT / "docs" / "architecture.md"
DOC = DOC_PATH.read_text(encoding="utf-8")
#: Files allowed to name ../shared: the CI script and the notes on the KServe CRD it validates the chart against.
SHARED_ALLOWED = {
    ".ci/run",
    "README.md",
    "charts/audio-score/README.md",
    "tests/helm_tools.py",
    "tests/test_architecture_doc.py",
}


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (``-`` and ``_`` kept), spaces to ``-``."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_links_resolve_inside_the_repository() -> None:
    anchors = {github_slug(h) for h in re.findall(r"^#+ (.+)$", DOC, flags=re.M)}
    prose = re.sub(r"`[^`\n]*`", "", DOC)  # a regex in a code span is not a link
    links = re.findall(r"\]\(([^)\s]+)\)", prose)
    assert len(links) > 40  # the pattern still finds them
    for link in links:
        assert "://" not in link, f"external link {link}"
        path, _, anchor = link.partition("#")
        if not path:
            assert anchor in anchors, f"no heading for #{anchor}"
            continue
        target = (DOC_PATH.parent / path).resolve()
        assert target.is_relative_to(REPO_ROOT), f"{link} leaves the repository"
        assert target.exists(), link


def test_every_setting_is_named() -> None:
    from audio_score.settings import FileConfig, ModelSpec

    variables = environment_variables()
    assert {"AUDIO_SCORE_PREDICTOR_URL", "AUDIO_SCORE_BODY_TIMEOUT_S", "JOB_COMPLETION_INDEX"} <= variables
    assert {"AUDIO_SCORE_CONFIG", "AUDIO_SCORE_MODEL_KEYS", "POD_NAMESPACE"} <= variables
    missing = sorted(v for v in variables if f"`{v}`" not in DOC)
    missing += sorted(f for f in FileConfig.model_fields if f"`{f}`" not in DOC)
    missing += sorted(f for f in ModelSpec.model_fields if f"`models[].{f}`" not in DOC and f"`{f}`" not in DOC)
    assert not missing, f"docs/architecture.md lacks {missing}"


def test_every_output_field_and_command_is_named() -> None:
    from audio_score import contract
    from audio_score.cli import commands
    from router.app import ScoreResponse

    tensors = [t.name for t in (*contract.INPUTS, *contract.ALL_OUTPUTS)]
    names = [*tensors, contract.DEADLINE_HEADER, *ScoreResponse.model_fields, *commands()]
    missing = sorted({n for n in names if f"`{n}`" not in DOC})
    assert not missing, f"docs/architecture.md lacks {missing}"


def test_format_versions_match_the_code() -> None:
    from audio_score.backends.base import FEATURE_VERSION
    from audio_score.cache import CACHE_FORMAT_VERSION, EMBEDDING, FRAMES, META, REFERENCE_TEXT, TRANSCRIPT

    assert f"`CACHE_FORMAT_VERSION` (now {CACHE_FORMAT_VERSION}" in DOC
    assert "`FEATURE_VERSION` in" in DOC and f"({FEATURE_VERSION})" in DOC
    for name in (META, TRANSCRIPT, EMBEDDING, FRAMES, REFERENCE_TEXT):
        assert f"`{name}`" in DOC, name


def test_nothing_sends_readers_to_the_shared_folder() -> None:
    try:
        listed = subprocess.run(
            ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc})")
    offenders = []
    for name in listed:
        path = REPO_ROOT / name
        if name in SHARED_ALLOWED or path.suffix not in {".py", ".md", ".sh", ".yaml", ".tpl", ".txt", ""}:
            continue
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if re.search(r"\.\./shared|[\"'`/ ]design\.md", text) or '"shared"' in text:
            offenders.append(name)
    assert not offenders, f"these files point at ../shared or the design document nobody has: {offenders}"


# --- claims that can be checked: names resolve, settings are read where the doc says, middleware order ------------

#: The project's Python packages, as (folder, import prefix).
PACKAGES = (
    ("audio_score", "audio_score"),
    ("audio_score_tools", "audio_score_tools"),
    ("predictors", "predictors"),
    ("router", "router"),
    ("cache-job/cache_job", "cache_job"),
)
#: Names the doc uses for an instance rather than its class: `settings.config` is a `Settings` field.
INSTANCES = {
    "app": "fastapi.FastAPI",
    "backend": "audio_score.backends.base.Backend",
    "settings": "audio_score.settings.Settings",
}
#: The part each per-part environment class configures, as the Environment table's "used by" column names it.
PART_OF_ENV_CLASS = {"RouterEnv": "router", "PredictorEnv": "predictor", "JobEnv": "cache build"}
#: Words in the "used by" column that name no part with an environment class (`up` reads the settings through
#: load_settings like the parts it starts).
NOT_PARTS = ("`up`", "up", "deprecated")
FILE_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".npy", ".txt", ".tpl", ".css", ".js", ".toml", ".md", ".html", ".sh")
#: Columns whose code spans name code: each one must exist.
CODE_COLUMNS = ("made by", "raised by", "code", "exception")


@functools.cache
def project_modules() -> dict[str, ast.Module]:
    """Every module of the project's packages by dotted name, parsed (nothing imported)."""
    modules = {}
    for folder, prefix in PACKAGES:
        root = REPO_ROOT / folder
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((prefix, *parts)).removesuffix(".__init__")
            modules[name] = ast.parse(path.read_text(encoding="utf-8"))
    return modules


def _top_level_names(tree: ast.Module, *, imports: bool = False) -> set[str]:
    """What a module defines at its top level (also inside ``if``/``try`` blocks); with ``imports``, the names it
    imports too (a library's ``__init__`` re-exports its API)."""
    names: set[str] = set()
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            targets = [e for t in node.targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
            exported = any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)
            if exported and isinstance(node.value, (ast.List, ast.Tuple)):  # a star-importing __init__
                names |= {e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and imports:
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            pending += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            pending += [stmt for handler in getattr(node, "handlers", []) for stmt in handler.body]
    return names


def _class_members(node: ast.ClassDef) -> set[str]:
    """What a class body defines (methods, fields, constants) and what its methods assign to ``self``."""
    names = _top_level_names(ast.Module(body=node.body, type_ignores=[]))
    for sub in ast.walk(node):
        stored = isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store)
        if stored and isinstance(sub.value, ast.Name) and sub.value.id == "self":
            names.add(sub.attr)
    return names


@functools.cache
def project_classes() -> dict[str, list[str]]:
    """Class name -> the dotted names of the modules that define it."""
    found: dict[str, list[str]] = {}
    for module, tree in project_modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, []).append(module)
    return found


@functools.cache
def project_definitions() -> frozenset[str]:
    """Every function, method and class name defined anywhere in the project, every module-level name, and every
    name a project module imports from a library (kserve's ``InvalidInput``: it exists, the code raises it)."""
    names: set[str] = set()
    for tree in project_modules().values():
        names |= _top_level_names(tree, imports=True)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.ImportFrom):
                names |= {a.asname or a.name for a in node.names}
    return frozenset(names)


def _class_has(cls: type, attr: str) -> bool:
    """The attribute on the class, as a field (dataclass, pydantic, annotation) or assigned to ``self`` in the
    source of the class or of any class it inherits from."""
    for klass in cls.__mro__:
        if attr in vars(klass) or attr in getattr(klass, "__annotations__", {}):
            return True
        if attr in getattr(klass, "model_fields", {}) or attr in getattr(klass, "__dataclass_fields__", {}):
            return True
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        tree = ast.parse(source)
        if any(isinstance(n, ast.ClassDef) and attr in _class_members(n) for n in tree.body):
            return True
    return False


def _external_has(module: str, attr: str) -> bool | None:
    """Whether an installed module has ``attr`` (a name it defines or imports, or a submodule), read from its
    source without importing it (``kserve.model_server`` parses the command line at import); None when there is
    no such module."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.origin in (None, "built-in", "frozen") or not str(spec.origin).endswith(".py"):
        return hasattr(importlib.import_module(module), attr)
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    if attr in _top_level_names(tree, imports=True):
        return True
    if any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in tree.body):
        # A star import (jellyfish re-exports its compiled core so) names nothing the source shows: ask the module.
        return hasattr(importlib.import_module(module), attr)
    try:
        return importlib.util.find_spec(f"{module}.{attr}") is not None
    except (ImportError, ValueError):
        return False


def _chart_has(dotted: str) -> bool:
    """A value of the chart (``router.predictorUrl``), or a field path its templates use (``limits.cpu``)."""
    chart = REPO_ROOT / "charts" / "audio-score"
    values = yaml.safe_load((chart / "values.yaml").read_text(encoding="utf-8"))
    node: Any = values
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            break
        node = node[key]
    else:
        return True
    return any(dotted in p.read_text(encoding="utf-8") for p in (chart / "templates").rglob("*") if p.is_file())


def _entry_point_group(dotted: str) -> bool:
    return f'[project.entry-points."{dotted}"]' in (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")


def resolve_dotted(name: str) -> str | None:
    """None when ``Owner.attr`` (a class, an instance named in INSTANCES, a module of the project or an installed
    one, a chart value, an entry-point group) exists; else why not."""
    owner, _, attr = name.removesuffix("()").rpartition(".")
    if owner in project_classes():
        for module in project_classes()[owner]:
            cls = getattr(importlib.import_module(module), owner, None)
            if isinstance(cls, type) and _class_has(cls, attr):
                return None
        return f"class {owner} ({', '.join(project_classes()[owner])}) has no {attr!r}"
    if owner in INSTANCES:
        module, _, cls_name = INSTANCES[owner].rpartition(".")
        cls = getattr(importlib.import_module(module), cls_name)
        return None if _class_has(cls, attr) else f"{INSTANCES[owner]} ({owner}) has no {attr!r}"
    if owner[:1].isupper():
        return f"no class {owner} in the project"
    modules = [m for m in project_modules() if m == owner or m.rsplit(".", 1)[-1] == owner]
    if any(attr in _top_level_names(project_modules()[m]) for m in modules):
        return None
    if _chart_has(name) or _entry_point_group(name):
        return None
    if modules:
        return f"module {owner} ({', '.join(modules)}) defines no {attr!r}"
    for candidate in (owner, f"kserve.{owner}"):
        found = _external_has(candidate, attr)
        if found is not None:
            return None if found else f"module {candidate} has no {attr!r}"
    return f"{owner!r} is no class, module, chart value or entry-point group known here"


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def unresolved_names(doc: str) -> list[str]:
    """Every dotted name (``Class.method``, ``module.function``, ``name()``) in code spans that does not exist."""
    problems = []
    for span in sorted(set(code_spans(doc))):
        if span.endswith(FILE_SUFFIXES) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(\(\))?", span):
            continue
        if "." in span:
            why = resolve_dotted(span)
            if why:
                problems.append(f"`{span}`: {why}")
        elif span.endswith("()") and span.removesuffix("()") not in project_definitions():
            problems.append(f"`{span}`: nothing of that name is defined")
    return problems


def tables(doc: str) -> Iterator[tuple[list[str], list[list[str]]]]:
    """(header cells, rows of cells) of every Markdown table."""
    lines = doc.splitlines()
    index = 0
    while index < len(lines) - 1:
        if lines[index].startswith("|") and re.fullmatch(r"\|( *:?-+:? *\|)+", lines[index + 1].strip()):
            header = [c.strip() for c in lines[index].strip().strip("|").split("|")]
            rows = []
            index += 2
            while index < len(lines) and lines[index].startswith("|"):
                rows.append([c.strip() for c in re.split(r"(?<!\\)\|", lines[index].strip().strip("|"))])
                index += 1
            yield header, rows
        else:
            index += 1


def unresolved_code_columns(doc: str) -> list[str]:
    """Bare names in a code column ("made by", "raised by", "code", "exception") that nothing defines."""
    problems = []
    for header, rows in tables(doc):
        columns = [i for i, title in enumerate(header) if title.lower() in CODE_COLUMNS]
        for row in rows:
            for i in columns:
                for span in code_spans(row[i] if i < len(row) else ""):
                    bare = span.removesuffix("()")
                    if re.fullmatch(r"[A-Za-z_]\w*", bare) and bare not in project_definitions():
                        problems.append(
                            f"`{span}` ({header[i]} of the {row[0]!r} row): nothing of that name is defined"
                        )
    return problems


def env_parts() -> dict[str, set[str]]:
    """Variable -> the parts whose environment class declares it (keyed on the class names of env_settings)."""
    from audio_score import env_settings

    part_classes = {name: getattr(env_settings, name) for name in PART_OF_ENV_CLASS}
    declared = [c for c in vars(env_settings).values() if isinstance(c, type) and issubclass(c, env_settings.PartEnv)]
    for cls in declared:
        if cls is env_settings.PartEnv or cls.__name__ in PART_OF_ENV_CLASS:
            continue
        used_as_base = any(issubclass(part, cls) for part in part_classes.values())
        assert used_as_base, f"{cls.__name__} is no part's class and no base of one: add it to PART_OF_ENV_CLASS"
    parts: dict[str, set[str]] = {}
    for name, cls in part_classes.items():
        for field_name, info in cls.model_fields.items():
            variable = str(info.validation_alias or env_settings.PREFIX + field_name.upper())
            parts.setdefault(variable, set()).add(PART_OF_ENV_CLASS[name])
    return parts


def claimed_parts(used_by: str) -> tuple[set[str], list[str]]:
    """The parts a "used by" cell names, and the words in it that name no part. Parenthesised text is a remark."""
    text = used_by
    while (stripped := re.sub(r"\([^()]*\)", "", text)) != text:
        text = stripped
    parts: set[str] = set()
    unknown = []
    everyone = set(PART_OF_ENV_CLASS.values())
    for item in (i.strip() for i in re.split(r"[,;]", text) if i.strip()):
        word = item.lower()
        found = {p for p in everyone if word.startswith(p)} | (everyone if word.startswith("all") else set())
        if found:
            parts |= found
        elif not word.startswith(NOT_PARTS):
            unknown.append(item)
    return parts, unknown


def misattributed_settings(doc: str) -> list[str]:
    """Rows of the Environment table whose "used by" differs from the classes that declare the variable."""
    section = doc.split("### Environment", 1)[1].split("\n### ", 1)[0]
    declared = env_parts()
    problems = []
    seen = set()
    for header, rows in tables(section):
        if header[:1] != ["variable"] or "used by" not in header:
            continue
        used_by = header.index("used by")
        for row in rows:
            variable = row[0].strip("`")
            seen.add(variable)
            if variable not in declared:
                continue  # read by settings.py itself for every part (the config path, the model keys)
            claimed, unknown = claimed_parts(row[used_by])
            if unknown:
                problems.append(f"{variable}: {unknown} name no part (router, predictor, cache build, all, `up`)")
            if claimed != declared[variable]:
                problems.append(
                    f"{variable}: the doc says {sorted(claimed)}, declared for {sorted(declared[variable])}"
                )
    problems += [f"{v}: declared for {sorted(p)} but has no row" for v, p in declared.items() if v not in seen]
    return problems


def stated_middleware(doc: str) -> list[str]:
    row = next(line for line in doc.splitlines() if line.startswith("| middleware (outermost first)"))
    return [span for span in code_spans(row) if span.endswith("Middleware")]


def test_every_dotted_name_exists() -> None:
    assert not unresolved_names(DOC), unresolved_names(DOC)


def test_every_name_in_a_code_column_exists() -> None:
    assert not unresolved_code_columns(DOC), unresolved_code_columns(DOC)


def test_settings_are_read_by_the_parts_the_doc_says() -> None:
    assert not misattributed_settings(DOC), misattributed_settings(DOC)


def test_middleware_order_is_the_apps() -> None:
    from audio_score.env_settings import RouterEnv
    from audio_score.settings import load_settings
    from router.app import create_app

    settings = load_settings(RouterEnv, REPO_ROOT / "config.json", env={"AUDIO_SCORE_API_KEYS": "k1"})
    app = create_app(settings)
    actual = [m.cls.__name__ for m in app.user_middleware]  # outermost first (add_middleware puts it in front)
    assert stated_middleware(DOC) == actual


def test_the_checks_catch_false_claims() -> None:
    """The stale lines these checks were written after: a method that was gone, a setting said to be read by the
    router only, the middleware listed innermost first."""
    assert unresolved_names("`ReferenceCache.delete` and `entries.compute_entries` and `NoSuchThing.x`") == [
        "`NoSuchThing.x`: no class NoSuchThing in the project",
        "`ReferenceCache.delete`: class ReferenceCache (audio_score.cache) has no 'delete'",
    ]
    assert unresolved_names("`router.predictorUrl`, `router.nosuchvalue`, `Settings.config`")[0].startswith(
        "`router.nosuchvalue`: module router"
    )
    stale_table = "| folder | name | made by |\n| --- | --- | --- |\n| old | `.old-x` | `_install`, `delete` |\n"
    assert unresolved_code_columns(stale_table) == [
        "`delete` (made by of the 'old' row): nothing of that name is defined"
    ]
    stale_env = (
        "### Environment\n\n| variable | default | minimum / values | used by |\n| --- | --- | --- | --- |\n"
        "| `AUDIO_SCORE_DEBUG_REQUEST_LOGS` | off | `1` | router (one log line per request) |\n"
        "| `AUDIO_SCORE_DEVICE` | `auto` | | predictor, cache build, decoder |\n"
    )
    problems = misattributed_settings(stale_env)
    assert "AUDIO_SCORE_DEBUG_REQUEST_LOGS: the doc says ['router'], declared for ['predictor', 'router']" in problems
    assert "AUDIO_SCORE_DEVICE: ['decoder'] name no part (router, predictor, cache build, all, `up`)" in problems
    assert any(p.startswith("AUDIO_SCORE_MAX_QUEUE_SIZE: declared for ['predictor'] but has no row") for p in problems)
    swapped = "| middleware (outermost first) | `UploadLimitMiddleware` (413), `APIKeyMiddleware` (401) | x |"
    assert stated_middleware(swapped) == ["UploadLimitMiddleware", "APIKeyMiddleware"] != stated_middleware(DOC)
