"""Dataset loading on tiny folders of both layouts, plus smoke tests on the shared data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent.errors import AgentragError
from eval.datasets import (
    CorpusDoc,
    DatasetError,
    Question,
    iter_corpus,
    load_retrieval_dataset,
)


def _shared_data() -> Path:
    override = os.environ.get("AGENTRAG_SHARED_DATA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


SHARED_DATA = _shared_data()


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def _corpus(folder: Path, ids: list[str]) -> None:
    _write_jsonl(
        folder / "corpus.jsonl",
        [
            {"id": doc_id, "title": f"Title {doc_id}", "text": f"Text of {doc_id}."}
            for doc_id in ids
        ],
    )


@pytest.fixture
def beir_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny_beir"
    _corpus(folder, ["10", "11", "12", "13"])
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n1\t10\t2\n1\t11\t0\n3\t12\t1\n", encoding="utf-8"
    )
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n2\t13\t1\n", encoding="utf-8"
    )
    _write_jsonl(
        folder / "queries.jsonl",
        [
            {"_id": "1", "text": "claim one", "metadata": {}},
            {"_id": "2", "text": "claim two (train)", "metadata": {}},
            {"_id": "3", "text": "claim three", "metadata": {"k": "v"}},
        ],
    )
    return folder


@pytest.fixture
def multihop_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny_hotpot"
    _corpus(folder, ["hp-a", "hp-b", "hp-c", "hp-d"])
    _write_jsonl(
        folder / "questions.jsonl",
        [
            {
                "id": "q1",
                "question": "Who directed the film in which A starred?",
                "answer": "B",
                "answers": ["B", "Mr. B"],
                "supporting_doc_ids": ["hp-b", "hp-a"],
                "supporting_titles": ["B", "A"],
                "split": "dev (distractor setting)",
            },
            {
                "id": "q2",
                "question": "Is C older than D?",
                "answer": "yes",
                "answers": ["yes"],
                "supporting_doc_ids": ["hp-c", "hp-d"],
                "split": "dev (distractor setting)",
            },
        ],
    )
    return folder


def test_beir_layout_from_queries_jsonl(beir_folder: Path) -> None:
    dataset = load_retrieval_dataset(beir_folder, "test")
    assert dataset.name == "tiny_beir"
    assert dataset.split == "test"
    assert dataset.corpus_path == beir_folder / "corpus.jsonl"
    # graded, and the grade-0 judgement is kept (it is a judged non-relevant doc)
    assert dataset.qrels == {"1": {"10": 2, "11": 0}, "3": {"12": 1}}
    # query 2 is a train query: filtered out because test qrels do not judge it
    assert [q.id for q in dataset.questions] == ["1", "3"]
    first = dataset.questions[0]
    assert first == Question(
        id="1",
        question="claim one",
        answer=None,
        answers=[],
        supporting_doc_ids=["10"],  # grade 0 is not supporting
        extra={"metadata": {}},
    )


def test_beir_layout_prefers_questions_split_file(beir_folder: Path) -> None:
    _write_jsonl(
        beir_folder / "questions_test.jsonl",
        [
            {
                "id": "1",
                "question": "claim one, from our layout",
                "answer": None,
                "answers": [],
                "supporting_doc_ids": ["10"],
                "claim_label": "SUPPORT",
            },
            {"id": "3", "question": "claim three", "supporting_doc_ids": ["12"]},
            {"id": "99", "question": "unjudged", "supporting_doc_ids": []},
        ],
    )
    dataset = load_retrieval_dataset(beir_folder)  # split defaults to "test"
    assert [q.id for q in dataset.questions] == ["1", "3"]
    assert dataset.questions[0].question == "claim one, from our layout"
    assert dataset.questions[0].extra == {"claim_label": "SUPPORT"}
    assert dataset.questions[1].answers == []


def test_beir_other_split(beir_folder: Path) -> None:
    dataset = load_retrieval_dataset(beir_folder, "train")
    assert [q.id for q in dataset.questions] == ["2"]
    assert dataset.qrels == {"2": {"13": 1}}


def test_qrels_without_header_are_read(beir_folder: Path) -> None:
    (beir_folder / "qrels" / "test.tsv").write_text("1\t10\t1\n", encoding="utf-8")
    assert load_retrieval_dataset(beir_folder).qrels == {"1": {"10": 1}}


def test_missing_split_lists_available_splits(beir_folder: Path) -> None:
    with pytest.raises(DatasetError, match=r"'dev'.*Available splits: test, train"):
        load_retrieval_dataset(beir_folder, "dev")


def test_missing_folder_names_siblings(tmp_path: Path, beir_folder: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist.*tiny_beir") as caught:
        load_retrieval_dataset(tmp_path / "no_such_set")
    assert isinstance(caught.value, AgentragError)


def test_folder_without_corpus(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no corpus\.jsonl"):
        load_retrieval_dataset(tmp_path / "empty")


def test_malformed_qrels_row_names_file_and_line(beir_folder: Path) -> None:
    (beir_folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n1\t10\t1\n1 10 1\n", encoding="utf-8"
    )
    with pytest.raises(DatasetError, match=r"test\.tsv:3: expected 3 tab-separated columns"):
        load_retrieval_dataset(beir_folder)


def test_non_integer_score(beir_folder: Path) -> None:
    (beir_folder / "qrels" / "test.tsv").write_text("1\t10\thigh\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"test\.tsv:1: score 'high' is not an integer"):
        load_retrieval_dataset(beir_folder)


def test_conflicting_judgements_rejected(beir_folder: Path) -> None:
    (beir_folder / "qrels" / "test.tsv").write_text("1\t10\t1\n1\t10\t2\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"test\.tsv:2: .* judged again"):
        load_retrieval_dataset(beir_folder)


def test_judged_query_without_text(beir_folder: Path) -> None:
    (beir_folder / "qrels" / "test.tsv").write_text("1\t10\t1\n77\t10\t1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"1 query id\(s\) judged .* no question .*: 77"):
        load_retrieval_dataset(beir_folder)


def test_malformed_json_line_names_file_and_line(multihop_folder: Path) -> None:
    path = multihop_folder / "questions.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text(lines[0] + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"questions\.jsonl:2: not valid JSON"):
        load_retrieval_dataset(multihop_folder)


def test_wrong_field_type_names_file_and_line(multihop_folder: Path) -> None:
    _write_jsonl(
        multihop_folder / "questions.jsonl",
        [{"id": "q1", "question": "?", "answers": "B", "supporting_doc_ids": ["hp-a"]}],
    )
    with pytest.raises(DatasetError, match=r"questions\.jsonl:1: field 'answers'"):
        load_retrieval_dataset(multihop_folder)


def test_duplicate_question_id(multihop_folder: Path) -> None:
    _write_jsonl(
        multihop_folder / "questions.jsonl",
        [{"id": "q1", "question": "a?"}, {"id": "q1", "question": "b?"}],
    )
    with pytest.raises(DatasetError, match=r"questions\.jsonl:2: question id 'q1' appears twice"):
        load_retrieval_dataset(multihop_folder)


def test_multihop_layout_builds_qrels_from_gold_docs(multihop_folder: Path) -> None:
    dataset = load_retrieval_dataset(multihop_folder)
    assert dataset.name == "tiny_hotpot"
    # split comes from the file, not from the (default "test") argument
    assert dataset.split == "dev"
    assert dataset.qrels == {"q1": {"hp-b": 1, "hp-a": 1}, "q2": {"hp-c": 1, "hp-d": 1}}
    first = dataset.questions[0]
    assert first.answer == "B"
    assert first.answers == ["B", "Mr. B"]
    assert first.supporting_doc_ids == ["hp-b", "hp-a"]  # hop order kept
    assert first.extra == {"supporting_titles": ["B", "A"], "split": "dev (distractor setting)"}


def test_multihop_ignores_split_argument(multihop_folder: Path) -> None:
    assert load_retrieval_dataset(multihop_folder, "train") == load_retrieval_dataset(
        multihop_folder, "test"
    )


def test_multihop_answers_default_to_answer(multihop_folder: Path) -> None:
    _write_jsonl(
        multihop_folder / "questions.jsonl",
        [{"id": "q1", "question": "?", "answer": "B", "supporting_doc_ids": ["hp-a"]}],
    )
    dataset = load_retrieval_dataset(multihop_folder)
    assert dataset.questions[0].answers == ["B"]
    assert dataset.split == "all"  # lines name no split


def test_iter_corpus_streams_folder_or_file(beir_folder: Path) -> None:
    docs = list(iter_corpus(beir_folder))
    assert [doc.id for doc in docs] == ["10", "11", "12", "13"]
    assert docs[0] == CorpusDoc(id="10", title="Title 10", text="Text of 10.")
    assert list(iter_corpus(beir_folder / "corpus.jsonl")) == docs


def test_iter_corpus_accepts_beir_ids_and_missing_title(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "corpus.jsonl", [{"_id": 5, "text": "t"}, {"id": "x", "title": ""}])
    stream = iter_corpus(tmp_path)
    assert next(stream) == CorpusDoc(id="5", title="", text="t")
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:2: field 'text' must be a string"):
        next(stream)


def test_iter_corpus_missing_file_fails_at_call(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no corpus\.jsonl"):
        iter_corpus(tmp_path)


def test_iter_corpus_bad_encoding(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_bytes(b'{"id": "a", "text": "\xff"}\n')
    with pytest.raises(DatasetError, match="not valid UTF-8"):
        list(iter_corpus(tmp_path))


# --- the shared data ---------------------------------------------------------------------------


def _shared_folder(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not found (set AGENTRAG_SHARED_DATA to the data folder)")
    return folder


def test_real_scifact() -> None:
    folder = _shared_folder("beir_scifact")
    test = load_retrieval_dataset(folder, "test")
    assert len(test.questions) == 300
    assert len(test.qrels) == 300
    assert sum(len(judged) for judged in test.qrels.values()) == 339
    assert all(q.answer is None and q.question for q in test.questions)
    train = load_retrieval_dataset(folder, "train")
    assert len(train.questions) == 809
    assert sum(len(judged) for judged in train.qrels.values()) == 919
    with pytest.raises(DatasetError, match="Available splits: test, train"):
        load_retrieval_dataset(folder, "dev")
    corpus_ids = {doc.id for doc in iter_corpus(folder)}
    assert len(corpus_ids) == 5183
    assert all(doc_id in corpus_ids for judged in test.qrels.values() for doc_id in judged)


def test_real_hotpotqa_dev500() -> None:
    folder = _shared_folder("hotpotqa_dev500")
    dataset = load_retrieval_dataset(folder)
    assert dataset.split == "dev"
    assert len(dataset.questions) == 500
    assert all(len(q.supporting_doc_ids) == 2 for q in dataset.questions)
    assert all(len(judged) == 2 for judged in dataset.qrels.values())
    assert len(dataset.qrels) == 500
    assert all(q.answer and q.answer in q.answers for q in dataset.questions)
    corpus_ids = {doc.id for doc in iter_corpus(folder)}
    assert len(corpus_ids) == 4858
    assert all(doc_id in corpus_ids for q in dataset.questions for doc_id in q.supporting_doc_ids)
