"""Loaders for the evaluation folders under the shared ``data/`` directory.

Two layouts exist (see ``data/README.md`` next to the folders):

- BEIR layout (``beir_scifact``): ``corpus.jsonl``, ``qrels/<split>.tsv`` with graded judgements,
  and the questions either in ``questions_<split>.jsonl`` (our layout, with answers and extra
  labels) or in BEIR's own ``queries.jsonl`` (``{"_id", "text", "metadata"}``).
- Multi-hop layout (``hotpotqa_dev500``, ``musique_train100``, ...): ``corpus.jsonl`` and one
  ``questions.jsonl`` whose ``supporting_doc_ids`` are the gold documents. There are no qrels;
  they are built from the gold documents with relevance 1.

A multi-hop folder holds exactly one split by construction (``hotpotqa_dev500`` is dev,
``musique_train100`` is train), so ``split`` is ignored for it and ``RetrievalDataset.split``
reports the split the file itself names (``"dev"`` for HotpotQA dev). Requiring the argument to
match would make the default ``"test"`` fail on every multi-hop folder, and echoing the argument
back would label dev numbers as test numbers in reports.

Every problem with the files raises ``DatasetError`` naming the file and line, so a broken
conversion is found at load time rather than as a silently lower score.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import AgentragError

__all__ = [
    "CorpusDoc",
    "DatasetError",
    "Question",
    "RetrievalDataset",
    "iter_corpus",
    "load_retrieval_dataset",
]

_QRELS_HEADER = ["query-id", "corpus-id", "score"]
_QUESTION_FIELDS = frozenset({"id", "question", "answer", "answers", "supporting_doc_ids"})


class DatasetError(AgentragError):
    """An evaluation folder is missing, lacks the asked split, or holds a malformed line."""


@dataclass(frozen=True, slots=True)
class CorpusDoc:
    id: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class Question:
    """One evaluation question; ``extra`` keeps every other field of its line (labels, titles...).

    BEIR queries carry no answer: ``answer`` is None and ``answers`` is empty.
    """

    id: str
    question: str
    answer: str | None
    answers: list[str]
    supporting_doc_ids: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RetrievalDataset:
    """Questions plus judgements; the corpus is only located here and streamed by ``iter_corpus``.

    ``qrels`` maps query id -> document id -> graded relevance, including grade-0 judgements,
    and lists only judged queries, as BEIR does.
    """

    name: str
    path: Path
    split: str
    corpus_path: Path
    questions: list[Question]
    qrels: dict[str, dict[str, int]]


def load_retrieval_dataset(path: Path, split: str = "test") -> RetrievalDataset:
    """Load questions and qrels of one split; see the module docstring for the two layouts."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(_missing_folder_message(path))
    corpus_path = path / "corpus.jsonl"
    if not corpus_path.is_file():
        raise DatasetError(
            f"{path} has no corpus.jsonl. An evaluation folder holds corpus.jsonl plus "
            "questions.jsonl (multi-hop) or qrels/<split>.tsv (BEIR); pass such a folder."
        )
    if (path / "qrels").is_dir():
        return _load_beir(path, split, corpus_path)
    if (path / "questions.jsonl").is_file():
        return _load_multihop(path, corpus_path)
    raise DatasetError(
        f"{path} has neither qrels/<split>.tsv nor questions.jsonl, so there is nothing to "
        "evaluate against. Add one of them, or pass another folder."
    )


def iter_corpus(path: Path) -> Iterator[CorpusDoc]:
    """Stream the documents of a folder (or of a ``corpus.jsonl`` file) without holding them all.

    A missing file is reported now; a malformed line when the stream reaches it.
    """
    path = Path(path)
    corpus_file = path / "corpus.jsonl" if path.is_dir() else path
    if not corpus_file.is_file():
        if path.is_dir():
            raise DatasetError(f"{path} has no corpus.jsonl; pass an evaluation folder.")
        raise DatasetError(_missing_folder_message(path))
    return _stream_corpus(corpus_file)


def _stream_corpus(corpus_file: Path) -> Iterator[CorpusDoc]:
    for line_no, record in _read_jsonl(corpus_file):
        where = f"{corpus_file}:{line_no}"
        # BEIR's own corpus files name the id "_id"; accept it so a raw BEIR folder also loads.
        id_key = "id" if "id" in record else "_id"
        yield CorpusDoc(
            id=_id_value(record, id_key, where),
            title=_optional_str(record, "title", where) or "",
            text=_required_str(record, "text", where),
        )


def _load_beir(path: Path, split: str, corpus_path: Path) -> RetrievalDataset:
    qrels_dir = path / "qrels"
    qrels_file = qrels_dir / f"{split}.tsv"
    if not qrels_file.is_file():
        available = sorted(p.stem for p in qrels_dir.glob("*.tsv"))
        listed = ", ".join(available) if available else "none (qrels/ holds no .tsv file)"
        raise DatasetError(
            f"Split {split!r} not found in {path}: there is no qrels/{split}.tsv. "
            f"Available splits: {listed}."
        )
    qrels = _read_qrels(qrels_file)

    questions_file = path / f"questions_{split}.jsonl"
    if questions_file.is_file():
        by_id = _read_questions(questions_file)
        source = questions_file
    else:
        source = path / "queries.jsonl"
        if not source.is_file():
            raise DatasetError(
                f"{path} has qrels/{split}.tsv but neither questions_{split}.jsonl nor "
                "queries.jsonl, so the judged queries have no text."
            )
        by_id = _read_beir_queries(source, qrels)

    unknown = [query_id for query_id in qrels if query_id not in by_id]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise DatasetError(
            f"{len(unknown)} query id(s) judged in {qrels_file} have no question in {source}: "
            f"{shown}. The two files come from different conversions; rebuild them together."
        )
    questions = [question for question in by_id.values() if question.id in qrels]
    return RetrievalDataset(
        name=path.name,
        path=path,
        split=split,
        corpus_path=corpus_path,
        questions=questions,
        qrels=qrels,
    )


def _load_multihop(path: Path, corpus_path: Path) -> RetrievalDataset:
    questions = list(_read_questions(path / "questions.jsonl").values())
    qrels = {
        question.id: dict.fromkeys(question.supporting_doc_ids, 1)
        for question in questions
        if question.supporting_doc_ids
    }
    return RetrievalDataset(
        name=path.name,
        path=path,
        split=_split_named_in(questions),
        corpus_path=corpus_path,
        questions=questions,
        qrels=qrels,
    )


def _split_named_in(questions: Iterable[Question]) -> str:
    """The split the lines name (``"dev (distractor setting)"`` -> ``"dev"``), else ``"all"``."""
    names = set()
    for question in questions:
        raw = question.extra.get("split")
        names.add(raw.split()[0] if isinstance(raw, str) and raw.strip() else "")
    if len(names) == 1:
        (only,) = names
        if only:
            return only
    return "all"


def _read_qrels(qrels_file: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line_no, line in _read_lines(qrels_file):
        columns = [column.strip() for column in line.split("\t")]
        if line_no == 1 and [column.lower() for column in columns] == _QRELS_HEADER:
            continue
        where = f"{qrels_file}:{line_no}"
        if len(columns) != 3:
            raise DatasetError(
                f"{where}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                f"got {len(columns)}."
            )
        query_id, doc_id, score_text = columns
        if not query_id or not doc_id:
            raise DatasetError(f"{where}: empty query-id or corpus-id.")
        try:
            score = int(score_text)
        except ValueError:
            header = "query-id<TAB>corpus-id<TAB>score"
            hint = f" (a header line must read {header!r})" if line_no == 1 else ""
            raise DatasetError(f"{where}: score {score_text!r} is not an integer{hint}.") from None
        judged = qrels.setdefault(query_id, {})
        if judged.get(doc_id, score) != score:
            raise DatasetError(
                f"{where}: ({query_id}, {doc_id}) is judged again with score {score}, "
                f"earlier {judged[doc_id]}; keep one judgement per pair."
            )
        judged[doc_id] = score
    return qrels


def _read_questions(questions_file: Path) -> dict[str, Question]:
    questions: dict[str, Question] = {}
    for line_no, record in _read_jsonl(questions_file):
        where = f"{questions_file}:{line_no}"
        question_id = _id_value(record, "id", where)
        if question_id in questions:
            raise DatasetError(f"{where}: question id {question_id!r} appears twice.")
        answer = _optional_str(record, "answer", where)
        answers = (
            _str_list(record, "answers", where)
            if "answers" in record
            else ([answer] if answer is not None else [])
        )
        questions[question_id] = Question(
            id=question_id,
            question=_required_str(record, "question", where),
            answer=answer,
            answers=answers,
            supporting_doc_ids=_id_list(record, "supporting_doc_ids", where),
            extra={key: value for key, value in record.items() if key not in _QUESTION_FIELDS},
        )
    return questions


def _read_beir_queries(queries_file: Path, qrels: dict[str, dict[str, int]]) -> dict[str, Question]:
    """BEIR's queries.jsonl holds every split's queries; keep the judged ones of this split."""
    questions: dict[str, Question] = {}
    for line_no, record in _read_jsonl(queries_file):
        where = f"{queries_file}:{line_no}"
        query_id = _id_value(record, "_id", where)
        text = _required_str(record, "text", where)
        if query_id not in qrels:
            continue
        if query_id in questions:
            raise DatasetError(f"{where}: query id {query_id!r} appears twice.")
        questions[query_id] = Question(
            id=query_id,
            question=text,
            answer=None,
            answers=[],
            supporting_doc_ids=[d for d, grade in qrels[query_id].items() if grade > 0],
            extra={key: value for key, value in record.items() if key not in {"_id", "text"}},
        )
    return questions


def _read_lines(file: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; a bad encoding is reported with its line."""
    line_no = 0
    try:
        with file.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                stripped = line.rstrip("\r\n")
                if stripped.strip():
                    yield line_no, stripped
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{file}:{line_no + 1}: not valid UTF-8 near this line ({exc.reason}); "
            "re-export the file as UTF-8."
        ) from exc


def _read_jsonl(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, line in _read_lines(file):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{file}:{line_no}: not valid JSON ({exc.msg}).") from exc
        if not isinstance(record, dict):
            raise DatasetError(
                f"{file}:{line_no}: expected a JSON object, got {type(record).__name__}."
            )
        yield line_no, record


def _id_value(record: dict[str, Any], key: str, where: str) -> str:
    """Ids may be written as JSON numbers; qrels ids are text, so both become text."""
    value = record.get(key)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DatasetError(f"{where}: field {key!r} must be a non-empty string id, got {value!r}.")


def _required_str(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise DatasetError(f"{where}: field {key!r} must be a string, got {value!r}.")
    return value


def _optional_str(record: dict[str, Any], key: str, where: str) -> str | None:
    value = record.get(key)
    if value is None or isinstance(value, str):
        return value
    raise DatasetError(f"{where}: field {key!r} must be a string or null, got {value!r}.")


def _str_list(record: dict[str, Any], key: str, where: str) -> list[str]:
    value = record.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DatasetError(f"{where}: field {key!r} must be a list of strings, got {value!r}.")
    return list(value)


def _id_list(record: dict[str, Any], key: str, where: str) -> list[str]:
    value = record.get(key, [])
    if not isinstance(value, list):
        raise DatasetError(f"{where}: field {key!r} must be a list of ids, got {value!r}.")
    return [_id_value({key: item}, key, where) for item in value]


def _missing_folder_message(path: Path) -> str:
    message = f"Dataset folder {path} does not exist."
    parent = path.parent
    if parent.is_dir():
        siblings = sorted(child.name for child in parent.iterdir() if child.is_dir())
        if siblings:
            message += f" Folders in {parent}: {', '.join(siblings)}."
    return message + " Pass a folder holding corpus.jsonl (layout: data/README.md, shared folder)."
