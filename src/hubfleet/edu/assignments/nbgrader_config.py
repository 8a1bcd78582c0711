"""An nbgrader course's ``nbgrader_config.py``, read without running it.

nbgrader runs the file as Python (traitlets). hubfleet reads it statically, so that a course folder — uploaded by
an instructor, say — never runs code in the grader: the file may hold ``c = get_config()``, comments, and
assignments of literal values (strings, numbers, booleans, ``None``, lists, tuples and dicts of them) to
``c.<Class>.<option>``; anything else is an error naming the line.

Every option that changes the student version or the scores is applied (:class:`CourseConfig`); options that only
concern nbgrader's own tools (its exchange, formgrader, logging, file permissions) are listed as ignored; any other
option — custom preprocessors, late-penalty plugins, options hubfleet does not know — is an error, since grading
without it could give other scores than nbgrader.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubfleet.edu.assignments.autotest import AutotestOptions
from hubfleet.edu.assignments.nbgrader_format import DEFAULT_OPTIONS, FormatOptions

__all__ = ["CONFIG_FILE", "ConfigError", "CourseConfig", "read_config"]

CONFIG_FILE = "nbgrader_config.py"

IGNORED_CLASSES = frozenset(
    {
        "Exchange",
        "ExchangeFactory",
        "ExchangeCollect",
        "ExchangeFetchAssignment",
        "ExchangeFetchFeedback",
        "ExchangeList",
        "ExchangeReleaseAssignment",
        "ExchangeReleaseFeedback",
        "ExchangeSubmit",
        "FormgradeExtension",
        "FormgradeApp",
        "NbGrader",
        "NbGraderAPI",
        "Application",
        "JupyterApp",
        "ZipCollectApp",
        "GenerateFeedback",
        "CourseListHandler",
        "ValidateApp",
        "Validator",
    }
)
"""Classes of nbgrader's own tools: their options do not change the student version or the scores."""

IGNORED_OPTIONS = frozenset(
    {
        ("CourseDirectory", "groupshared"),
        ("CourseDirectory", "course_id"),
        ("CourseDirectory", "solution_directory"),
        ("CourseDirectory", "source_with_tests_directory"),
        ("CourseDirectory", "student_id_exclude"),
        ("CourseDirectory", "max_dir_size"),
        ("Execute", "interrupt_on_timeout"),
        ("Execute", "raise_on_iopub_timeout"),
        ("Execute", "execute_retries"),
        ("Execute", "extra_arguments"),
        ("Execute", "error_on_timeout"),
        ("OverwriteCells", "missing_cell_notification"),
        ("Autograde", "create_student"),
        ("GenerateAssignment", "create_assignment"),
        ("GenerateAssignment", "no_database"),
        ("InstantiateTests", "use_salt"),
        ("LimitOutput", "max_lines"),
        ("LimitOutput", "max_traceback"),
        ("IgnorePattern", "enabled"),
    }
)
"""Options of the grading classes that do not change scores (file permissions, retries, how long outputs shown in
feedback may be, ``use_salt`` which nbgrader 0.9 itself does not use)."""

MUST_BE_TRUE = {
    ("ClearSolutions", "enforce_metadata"),
    ("ClearHiddenTests", "enforce_metadata"),
    ("ClearMarkScheme", "enforce_metadata"),
    ("InstantiateTests", "enforce_metadata"),
}


class ConfigError(ValueError):
    """``nbgrader_config.py`` holds something hubfleet cannot honour; the message names the line."""


@dataclass
class CourseConfig:
    """What of an nbgrader course's configuration hubfleet applies (defaults: nbgrader 0.9.6's)."""

    root: str | None = None
    directory_structure: str = "{nbgrader_step}/{student_id}/{assignment_id}"
    source_directory: str = "source"
    release_directory: str = "release"
    submitted_directory: str = "submitted"
    autograded_directory: str = "autograded"
    feedback_directory: str = "feedback"
    db_url: str | None = None
    ignore: list[str] = field(default_factory=lambda: [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback"])
    include: list[str] = field(default_factory=lambda: ["*"])
    max_file_size_kb: int = 100000
    format: FormatOptions = DEFAULT_OPTIONS
    autotest: AutotestOptions = field(default_factory=AutotestOptions)
    header: str | None = None
    footer: str | None = None
    cell_seconds: float | None = 30.0
    add_missing_cells: bool = False
    exclude_overwriting: dict[str, list[str]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    """``Class.option`` names read but ignored (see the module docstring)."""


def _literal(node: ast.expr, line: int) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ConfigError(
            f"line {line}: only literal values can be read (hubfleet does not run nbgrader_config.py)"
        ) from None


def _target(node: ast.expr, line: int) -> tuple[str, str]:
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "c"
    ):
        return node.value.attr, node.attr
    raise ConfigError(f"line {line}: expected an assignment to c.<Class>.<option>")


def _statements(text: str, where: Path) -> list[tuple[str, str, Any, int]]:
    try:
        tree = ast.parse(text, str(where))
    except SyntaxError as exc:
        raise ConfigError(f"{where}: not valid Python: {exc}") from None
    found = []
    for node in tree.body:
        line = node.lineno
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring or a bare string
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "c"
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "get_config"
        ):
            continue
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            section, option = _target(node.targets[0], line)
            found.append((section, option, _literal(node.value, line), line))
            continue
        raise ConfigError(f"{where}, line {line}: only `c.<Class>.<option> = <value>` lines can be read")
    return found


def _str(value: Any, name: str, line: int) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"line {line}: {name} must be text")
    return value


def read_config(path: Path) -> CourseConfig:
    """The course configuration in ``path`` (nbgrader's defaults if the file is missing)."""
    config = CourseConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return config
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    fmt_options: dict[str, Any] = {}
    autotest_options: dict[str, Any] = {}
    for section, option, value, line in _statements(text, path):
        name = f"{section}.{option}"
        at = f"{path}, line {line}"
        try:
            if (section, option) in MUST_BE_TRUE:
                if value is not True:
                    raise ConfigError(f"{name} = {value!r}: hubfleet always checks nbgrader's cell metadata")
            elif section in IGNORED_CLASSES or (section, option) in IGNORED_OPTIONS:
                config.ignored.append(name)
            elif section == "CourseDirectory" and option in (
                "root",
                "directory_structure",
                "source_directory",
                "release_directory",
                "submitted_directory",
                "autograded_directory",
                "feedback_directory",
                "db_url",
            ):
                setattr(config, option, _str(value, name, line))
            elif section == "CourseDirectory" and option in ("ignore", "include"):
                if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{name} must be a list of file names or globs")
                setattr(config, option, list(value))
            elif (section, option) == ("CourseDirectory", "max_file_size"):
                config.max_file_size_kb = int(value)
            elif section == "ClearSolutions" and option == "code_stub":
                stubs = value if isinstance(value, dict) else {"python": _str(value, name, line)}
                fmt_options["code_stubs"] = {str(k): _str(v, name, line) for k, v in stubs.items()}
            elif section == "ClearSolutions" and option in (
                "text_stub",
                "begin_solution_delimeter",
                "end_solution_delimeter",
            ):
                key = {"text_stub": "text_stub"}.get(option, option.replace("_delimeter", ""))
                fmt_options[key] = _str(value, name, line)
            elif section == "ClearHiddenTests" and option in ("begin_test_delimeter", "end_test_delimeter"):
                fmt_options[option.replace("test_delimeter", "hidden_tests")] = _str(value, name, line)
            elif section == "ClearMarkScheme" and option in (
                "begin_mark_scheme_delimeter",
                "end_mark_scheme_delimeter",
            ):
                fmt_options[option.replace("_delimeter", "")] = _str(value, name, line)
            elif (section, option) == ("ClearMarkScheme", "check_attachment_leakage"):
                fmt_options["check_attachment_leakage"] = bool(value)
            elif section == "IncludeHeaderFooter" and option in ("header", "footer"):
                setattr(config, option, _str(value, name, line) or None)
            elif section == "InstantiateTests" and option in (
                "autotest_filename",
                "autotest_delimiter",
                "hashed_delimiter",
                "comment_strs",
            ):
                autotest_options[option] = value
            elif (section, option) == ("Execute", "timeout"):
                config.cell_seconds = None if value is None else float(value)
            elif (section, option) == ("Execute", "allow_errors"):
                if value is not True:
                    raise ConfigError(f"{name} = {value!r}: nbgrader's autograde always runs every cell")
            elif (section, option) == ("OverwriteCells", "add_missing_cells"):
                config.add_missing_cells = bool(value)
            elif (section, option) == ("Autograde", "exclude_overwriting"):
                if not isinstance(value, dict):
                    raise ConfigError(f"{name} must be a dict of assignment names to lists of files")
                config.exclude_overwriting = {str(k): [str(f) for f in v] for k, v in value.items()}
            else:
                raise ConfigError(
                    f"{name}: hubfleet does not implement this option, so grading could give other scores than "
                    "nbgrader; remove it (or grade this course with nbgrader)"
                )
        except ConfigError as exc:
            raise ConfigError(f"{at}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{at}: {name}: {exc}") from None
    try:
        config.format = FormatOptions(**fmt_options)
        config.autotest = AutotestOptions(**autotest_options)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config
