from __future__ import annotations

from retrievers.sparse import Bm25Encoder


def terms(encoder: Bm25Encoder, text: str) -> set[int]:
    return set(encoder.encode_query(text).indices)


def test_token_ids_are_stable_across_instances() -> None:
    a, b = Bm25Encoder(), Bm25Encoder()
    assert a.encode_query("retrieval augmented generation") == b.encode_query(
        "retrieval augmented generation"
    )
    assert a.encode_documents(["hybrid search"]) == b.encode_documents(["hybrid search"])


def test_lowercasing_stemming_and_stop_words() -> None:
    enc = Bm25Encoder()
    assert terms(enc, "Proteins") == terms(enc, "protein")
    assert terms(enc, "running runs") == terms(enc, "run")
    assert terms(enc, "the of and a") == set()
    assert terms(enc, "the protein") == terms(enc, "protein")


def test_document_weights_follow_term_frequency_and_length() -> None:
    enc = Bm25Encoder(k1=1.2, b=0.75, avg_len=10)
    once = enc.encode_documents(["cell membrane"])[0]
    twice = enc.encode_documents(["cell cell membrane"])[0]
    cell = terms(enc, "cell").pop()
    w_once = dict(zip(once.indices, once.values, strict=True))[cell]
    w_twice = dict(zip(twice.indices, twice.values, strict=True))[cell]
    assert w_twice > w_once  # more occurrences weigh more...
    assert w_twice < 2 * w_once  # ...but saturate (k1)
    long_doc = enc.encode_documents(["cell " + "membrane " * 40])[0]
    w_long = dict(zip(long_doc.indices, long_doc.values, strict=True))[cell]
    assert w_long < w_once  # length normalisation (b)


def test_query_weights_are_one_per_unique_term() -> None:
    q = Bm25Encoder().encode_query("cell cell membrane")
    assert len(q.indices) == 2
    assert q.values == [1.0, 1.0]
