"""The states and failure codes are named once (states.py): the SQL the database layer runs speaks
only their words, so a renamed state cannot leave a query matching nothing."""

from __future__ import annotations

import re

import pytest

from cvunet_matting.states import FINAL_TASK_STATES, BatchState, ChunkState, FailureCode, TaskState
from tests.support import REPO

DB = REPO / "cvunet_matting" / "db"
STATE_WORDS = {state.value for state in (*TaskState, *BatchState, *ChunkState)}
FAILURE_WORDS = {code.value for code in FailureCode}
# `state = 'x'`, `state <> 'x'`, `state IN ('x', 'y')`, `error_code IS DISTINCT FROM 'x'`, a column default
COMPARED = re.compile(
    r"\b(state|error_code)\s*(?:=|<>|!=|IS DISTINCT FROM|IN|DEFAULT)\s*\(?((?:'[a-z_]+'(?:,\s*)?)+)\)?", re.IGNORECASE
)


def words_in(text: str) -> list[tuple[str, str]]:
    found = []
    for column, quoted in COMPARED.findall(text):
        found += [(column.lower(), word) for word in re.findall(r"'([a-z_]+)'", quoted)]
    return found


def sql_sources() -> list:
    return sorted(DB.glob("*.py")) + sorted((DB / "migrations").glob("*.sql"))


def test_the_finder_reads_every_form_it_is_meant_to():
    sql = "WHERE state IN ('pending', 'retry') AND error_code IS DISTINCT FROM 'refused' OR c.state <> 'queued'"
    assert words_in(sql) == [("state", "pending"), ("state", "retry"), ("error_code", "refused"), ("state", "queued")]


@pytest.mark.parametrize("source", sql_sources(), ids=lambda p: p.name)
def test_the_database_layer_speaks_the_enums_words(source):
    found = words_in(source.read_text())
    words = {"state": STATE_WORDS, "error_code": FAILURE_WORDS}
    unknown = {(column, word) for column, word in found if word not in words[column]}
    assert not unknown, f"{source.name}: {sorted(unknown)} are not in states.py"


def test_the_queries_name_states_at_all():
    """The finder is not blind: the reads name most task states and every failure code they filter on."""
    words = {word for path in sql_sources() for _, word in words_in(path.read_text())}
    assert {"pending", "started", "retry", "success", "failure", "done", "queued"} <= words
    assert {"refused", "cancelled", "storage"} <= words


def test_the_final_states_are_states():
    assert {TaskState.SUCCESS, TaskState.FAILURE} == FINAL_TASK_STATES
    assert TaskState.FAILURE == "failure" and {"failure": 1}[TaskState.FAILURE] == 1  # a row's column matches
