"""Claim-level support: the numbers, names, negation and ordering of an answer sentence checked
against the chunks it cites, on cases with a known answer and on real encyclopedic text."""

from __future__ import annotations

import json
import random
import re
import unicodedata
from pathlib import Path

import pytest

from agent.claims import ClaimProblem, check_claims, sentence_facts, supporting_texts
from agent.text import split_sentences

VENUS = (
    "Venus is the second planet from the Sun. It has a mean surface temperature of about 465 "
    "degrees Celsius, hotter than Mercury. It has no moons."
)
SHIRLEY = (
    "Shirley Temple Black (April 23, 1928 \u2013 February 10, 2014) was an American actress, "
    "singer, dancer, businesswoman, and diplomat who was Hollywood's number one box-office draw "
    "as a child actress from 1935 to 1938. As an adult, she was named United States ambassador "
    "to Ghana and to Czechoslovakia and also served as Chief of Protocol of the United States."
)
JANET = (
    "Janet Marie Waldo (February 4, 1920 \u2013 June 12, 2016) was an American radio and voice "
    'actress. She is best known in animation for voicing Judy Jetson, Nancy in "Shazzan", '
    'Penelope Pitstop, and Josie in "Josie and the Pussycats", and on radio as the title '
    'character in "Meet Corliss Archer".'
)
CORLISS = (
    "Meet Corliss Archer, a program from radio's Golden Age, ran from January 7, 1943 to "
    "September 30, 1956. Although it was CBS's answer to NBC's popular \"A Date with Judy\", it "
    'was also broadcast by NBC in 1948 as a summer replacement for "The Bob Hope Show". From '
    "October 3, 1952 to June 26, 1953, it aired on ABC, finally returning to CBS. Despite the "
    "program's long run, fewer than 24 episodes are known to exist."
)
CRAFT = (
    "Charles Craft (May 9, 1902 \u2013 September 19, 1968) was an English-born American film and "
    "television editor. Born in the county of Hampshire in England on May 9, 1902, Craft would "
    "enter the film industry in Hollywood in 1927. Over the next 25 years, Craft would edit 90 "
    'feature-length films. His first show being "Racket Squad", from 1951\u201353, he was the main '
    "editor, editing 93 of the 98 episodes."
)
CORPUS = Path("/work/shared/data/hotpotqa_dev500/corpus.jsonl")


def kinds(sentence: str, *cited: str, given: tuple[str, ...] = ()) -> list[str]:
    return [p.kind for p in check_claims(sentence, list(cited), given)]


# --- numbers --------------------------------------------------------------------------------


def test_a_close_but_wrong_number_is_caught_and_the_evidence_quoted() -> None:
    problems = check_claims("Venus has a surface temperature of 462°C [1].", [VENUS])
    assert problems == [
        ClaimProblem(
            "number", "462°C", "462°C is not in the cited evidence (it says 465 degrees Celsius)"
        )
    ]


@pytest.mark.parametrize(
    ("sentence", "evidence"),
    [
        ("Venus has a surface temperature of 465 °C [1].", VENUS),
        ("Venus has a surface temperature of 465°C.", VENUS),
        ("Its surface is at 465 degrees Celsius.", VENUS),
        ("The city has 1.5 million people.", "The city has 1,500,000 people."),
        ("The city has 1,500,000 people.", "The city has 1.5 million people."),
        ("The lake covers 45% of the park.", "The lake covers 45 percent of the park."),
        ("The lake covers 45 per cent of the park.", "The lake covers 45% of the park."),
        ("The trail is 1.5 km long.", "The trail is 1,500 metres long."),
        ("The deal was worth $5m.", "The deal was worth 5 million dollars."),
        ("The road is about 120 miles long.", "The road is 120.4 miles long."),
        ("The band released two albums.", "The band released 2 albums."),
        ("Both albums went gold, and the two sold well.", "Both albums went gold."),
        ("It was the third largest city.", "It was the 3rd largest city."),
        ("He served in the Second World War.", "He served in World War II."),
        ("She was a child star in the 1930s.", SHIRLEY),
        ("More than 500 people attended.", "512 people attended."),
        ("She was 17 years old in the film.", "It starred then 17-year-old Shirley Temple."),
        ("Craft edited Racket Squad from 1951 to 1953.", CRAFT),
    ],
)
def test_the_same_quantity_written_another_way_passes(sentence: str, evidence: str) -> None:
    assert check_claims(sentence, [evidence]) == []


def test_quantities_are_read_as_a_reader_reads_them() -> None:
    def read(text: str) -> list[tuple[float, str]]:
        return [(q.value, q.unit) for q in sentence_facts(text).quantities]

    assert read("1.5 million") == read("1,500,000") == [(1_500_000, "")]
    assert read("45%") == read("45 percent") == read("45 per cent") == [(45, "%")]
    assert read("465 degrees Celsius") == read("465 °C") == read("465°C") == [(465, "°c")]
    assert read("120 km") == read("120 kilometres") == read("120 kilometers") == [(120, "km")]
    assert read("US$3.2 billion") == read("3.2 billion dollars") == [(3.2e9, "$")]
    dates = sentence_facts("born April 23, 1928, or 23 April 1928; died in March 2014")
    assert [(q.kind, q.value) for q in dates.quantities] == [
        ("date", 19280423),
        ("date", 19280423),
        ("date", 20140300),
    ]
    hedged = sentence_facts("about 465 and more than 500").quantities
    assert [(q.approximate, q.bound) for q in hedged] == [(True, ""), (False, "min")]


@pytest.mark.parametrize(
    ("sentence", "evidence", "detail"),
    [
        ("The road is 120 km long.", "The road is 120 miles long.", "(it says 120 miles)"),
        ("The lake covers 46% of the park.", "It covers 45 percent.", "(it says 45 percent)"),
        ("The road is 120 miles long.", "The road is 120.4 miles long.", "(it says 120.4 miles)"),
        ("It is about 462 degrees.", VENUS, "(it says 465 degrees Celsius)"),
        ("The city has 1.6 million people.", "It has 1,500,000 people.", "(it says 1,500,000)"),
        ("More than 600 people attended.", "512 people attended.", "(it says 512)"),
        ("Fewer than 25 episodes exist.", CORLISS, "(it says 24)"),
        ("It was the fourth largest city.", "It was the 3rd largest city.", "(it says 3rd)"),
    ],
)
def test_a_different_number_or_unit_is_a_problem(sentence: str, evidence: str, detail: str) -> None:
    """Unhedged numbers are strict (120 is not 120.4), a hedge allows 0.5% (462 is not "about"
    465), a bound is no licence ("fewer than 25" is not what "fewer than 24" says)."""
    problems = check_claims(sentence, [evidence])
    assert [p.kind for p in problems] == ["number"]
    assert problems[0].detail.endswith(detail)


def test_years_and_dates_match_exactly() -> None:
    assert check_claims("Shirley Temple was born on 23 April 1928.", [SHIRLEY]) == []
    assert check_claims("Shirley Temple was born in 1928.", [SHIRLEY]) == []
    assert check_claims("Shirley Temple Black died in February 2014.", [SHIRLEY]) == []
    assert check_claims("Temple was born on April 23.", [SHIRLEY]) == []
    born_late = check_claims("Shirley Temple was born in about 1929.", [SHIRLEY])
    assert born_late == [
        ClaimProblem("number", "1929", "1929 is not in the cited evidence (it says April 23, 1928)")
    ]
    assert kinds("Shirley Temple Black died in March 2014.", SHIRLEY) == ["number"]
    assert kinds("Shirley Temple was born on April 24, 1928.", SHIRLEY) == ["number"]


# --- names ----------------------------------------------------------------------------------


def test_a_name_from_another_paragraph_is_caught() -> None:
    problems = check_claims(
        "Janet Waldo served as Chief of Protocol of the United States.", [SHIRLEY]
    )
    assert problems == [
        ClaimProblem("name", "Janet Waldo", "the cited evidence never names Janet Waldo")
    ]


def test_a_name_the_question_gives_is_known() -> None:
    sentence = "Corliss Archer was played by Shirley Temple in Kiss and Tell [1]."
    chunk = "Kiss and Tell is a 1945 American comedy film starring Shirley Temple."
    question = "Who played Corliss Archer in the film Kiss and Tell?"
    assert kinds(sentence, chunk) == ["name"]
    assert kinds(sentence, chunk, given=(question,)) == []


@pytest.mark.parametrize(
    ("sentence", "evidence"),
    [
        ("Temple served as Chief of Protocol.", SHIRLEY),
        ("Shirley Black was an American diplomat.", SHIRLEY),
        ("Beyonce's debut album sold well.", "Beyoncé released her debut album in 2003."),
        ("Beyoncé released her debut album.", "Beyonce released her debut album in 2003."),
        ("She was Hollywood's top draw.", "She was the top draw in Hollywood."),
        ("She was the top draw in Hollywood.", "She was Hollywood's top draw."),
        ("Temple was the U.S. ambassador to Ghana.", SHIRLEY),
        ("Temple was a US diplomat.", SHIRLEY),
        ("The show aired on NBC.", "The show aired on the National Broadcasting Company."),
        ("The National Broadcasting Company aired it.", "NBC aired the show."),
        ("The French president spoke.", "The president of France spoke."),
        ("President Macron spoke in Paris.", "Macron spoke in Paris."),
        ("J.R.R. Tolkien wrote it.", "It was written by J. R. R. Tolkien."),
    ],
)
def test_a_name_matches_as_a_reader_matches_it(sentence: str, evidence: str) -> None:
    """Part of the full name, accents, possessives, dotted initials, an initialism, a country's
    adjective, a leading honorific."""
    assert check_claims(sentence, [evidence]) == []


def test_words_capitalised_by_their_place_are_not_names() -> None:
    assert sentence_facts("However, Temple was a diplomat.").names == ("Temple",)
    assert sentence_facts("The film starred Shirley Temple.").names == ("Shirley Temple",)
    assert sentence_facts("In 1948, it aired in April.").names == ()
    assert sentence_facts("Additionally, both were born on May 9, 1902.").names == ()
    assert sentence_facts("Venus has no moons.").names == ("Venus",)
    assert check_claims("According to the chunk, Temple was a diplomat.", [SHIRLEY]) == []


# --- negation -------------------------------------------------------------------------------


FILM = (
    "The film was released in theatres in 1999. It was never shown on television. "
    "Critics did not like its ending."
)


def test_an_added_negation_is_caught() -> None:
    problems = check_claims("The film was not released in theatres [1].", [FILM])
    assert [(p.kind, p.claim) for p in problems] == [("negation", "not")]
    assert "The film was released in theatres in 1999." in problems[0].detail


def test_a_removed_negation_is_caught() -> None:
    assert kinds("The film was shown on television.", FILM) == ["negation"]
    assert kinds("Venus has moons.", VENUS) == ["negation"]


def test_a_negation_elsewhere_in_the_chunk_does_not_confuse_the_check() -> None:
    assert check_claims("The film was released in theatres in 1999.", [FILM]) == []
    assert check_claims("The film never aired on television.", [FILM]) == []
    assert check_claims("Critics didn't like the film's ending.", [FILM]) == []
    assert check_claims("Venus is not only hot but also the second planet.", [VENUS]) == []


# --- comparison -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "evidence"),
    [
        ("Alice is younger than Bob.", "Alice is older than Bob by two years."),
        ("Alice is older than Bob.", "Bob is older than Alice."),
        ("Paris was founded before Rome.", "Rome was founded before Paris."),
        ("Paris was founded after Rome.", "Paris was founded before Rome, says the legend."),
        ("The older sister wrote the novel.", "The younger sister wrote the novel."),
        ("Venus is colder than Mercury.", VENUS),
        ("The bridge opened after the war ended.", "The bridge opened before the war ended."),
    ],
)
def test_a_flipped_comparison_is_caught(sentence: str, evidence: str) -> None:
    assert kinds(sentence, evidence) == ["comparison"]


@pytest.mark.parametrize(
    ("sentence", "evidence"),
    [
        ("Bob is younger than Alice.", "Alice is older than Bob."),
        ("Rome was founded before Paris.", "Paris was founded after Rome."),
        ("Venus is hotter than Mercury.", VENUS),
        ("The younger sister wrote the novel.", "The novel was written by the younger sister."),
    ],
)
def test_the_same_ordering_said_another_way_passes(sentence: str, evidence: str) -> None:
    assert check_claims(sentence, [evidence]) == []


def test_the_facts_say_what_a_sentence_commits_to() -> None:
    facts = sentence_facts("Janet Waldo, the elder, was not younger than Temple [2].")
    assert facts.names == ("Janet Waldo", "Temple")
    assert facts.negated
    assert facts.comparatives == ("older", "younger")


# --- paraphrase and the right chunk ---------------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "evidence"),
    [
        ("Meet Corliss Archer was a radio program that ran from January 7, 1943, to "
         "September 30, 1956.", CORLISS),
        ("The program aired on ABC between October 3, 1952 and June 26, 1953.", CORLISS),
        ("Fewer than 24 episodes of Meet Corliss Archer are known to exist.", CORLISS),
        ("In 1948, NBC broadcast Meet Corliss Archer as a summer replacement for The Bob Hope "
         "Show.", CORLISS),
        ("Although the show was CBS's response to NBC's A Date with Judy, NBC also aired it in "
         "1948.", CORLISS),
        ("Shirley Temple served as the U.S. ambassador to Ghana and Czechoslovakia.", SHIRLEY),
        ("She was Hollywood's top box-office star from 1935 through 1938.", SHIRLEY),
        ("Shirley Temple was born in 1928 and died in 2014.", SHIRLEY),
        ("Shirley Temple Black was not only an actress but also a diplomat.", SHIRLEY),
        ("Later in life, Temple became Chief of Protocol of the United States.", SHIRLEY),
        ("Shirley Temple, who died on 10 February 2014, was an American actress and singer.",
         SHIRLEY),
        ("Janet Waldo, born February 4, 1920, was an American voice actress.", JANET),
        ("Waldo voiced Judy Jetson and Penelope Pitstop.", JANET),
        ("On radio, Janet Waldo played the title role in Meet Corliss Archer.", JANET),
        ("Charles Craft edited 90 feature films over 25 years.", CRAFT),
        ("Craft was born in Hampshire, England, on 9 May 1902.", CRAFT),
        ("Craft edited 93 of the 98 episodes of Racket Squad.", CRAFT),
        ("Charles Craft entered the Hollywood film industry in 1927.", CRAFT),
        ("With a mean surface temperature of about 465 °C, Venus is hotter than Mercury.", VENUS),
        ("Venus, which has no moons, is the second planet from the Sun.", VENUS),
    ],
)  # fmt: skip
def test_a_faithful_paraphrase_raises_no_problem(sentence: str, evidence: str) -> None:
    """Other words, other order, other spellings of the same numbers and names."""
    assert check_claims(sentence, [evidence]) == []


def test_supporting_texts_finds_the_chunk_a_mis_cited_claim_comes_from() -> None:
    sentence = "Janet Waldo was born on February 4, 1920 [1]."
    assert kinds(sentence, SHIRLEY) == ["number", "name"]
    assert supporting_texts(sentence, [SHIRLEY, CORLISS, JANET]) == [2]
    assert supporting_texts("Waldo voiced Judy Jetson.", [SHIRLEY, JANET]) == [1]
    assert supporting_texts("Temple played Corliss Archer.", [SHIRLEY, JANET, CORLISS]) == []
    assert supporting_texts(
        "Temple played Corliss Archer.", [SHIRLEY, JANET], given=["Who played Corliss Archer?"]
    ) == [0]


# --- real text ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paragraphs() -> list[str]:
    if not CORPUS.exists():
        pytest.skip(f"{CORPUS} is absent")
    with CORPUS.open() as f:
        return [json.loads(line)["text"] for _, line in zip(range(200), f, strict=False)]


def fold(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text)
    return " ".join(re.findall(r"\w+", "".join(c for c in plain if c.isascii()).lower()))


def test_verbatim_sentences_raise_no_problem(paragraphs: list[str]) -> None:
    """Each sentence against its own paragraph. The one known case is "24." split off
    "Dec. 24. 1970" by the sentence splitter."""
    pairs = [(s, p) for p in paragraphs for s in split_sentences(p)]
    alarms = [(s, check_claims(s, [p])) for s, p in pairs]
    alarms = [(s, problems) for s, problems in alarms if problems]
    print(f"\nverbatim false alarms: {len(alarms)}/{len(pairs)}")
    for sentence, problems in alarms:
        print(f"  {sentence!r}: {problems}")
    assert len(alarms) <= 0.02 * len(pairs)


def test_sentence_fragments_raise_no_problem(paragraphs: list[str]) -> None:
    """Clauses cut out of a sentence, as an answer quotes part of one: the negation and
    comparison checks must find the clause they come from."""
    pieces = [
        (piece, p)
        for p in paragraphs
        for s in split_sentences(p)
        for piece in re.split(r", (?:and|but|which|who|while) |; ", s)
        if len(piece.split()) >= 4
    ]
    alarms = [piece for piece, p in pieces if check_claims(piece, [p])]
    print(f"\nfragment false alarms: {len(alarms)}/{len(pieces)}")
    assert len(alarms) <= 0.02 * len(pieces)


def _other_number(sentence: str, paragraph: str) -> str | None:
    """The sentence with its first number changed to one the paragraph does not hold: the last
    non-zero digit moved (the first when the number is hedged, so the change exceeds 0.5%)."""
    m = re.search(r"(?<![\w.,])\d[\d,]*(?:\.\d+)?", sentence)
    if m is None:
        return None
    written = m.group(0).rstrip(",")
    held = set()
    for q in sentence_facts(paragraph).quantities:
        held |= {q.value, q.value // 10000, q.value % 100} if q.kind == "date" else {q.value}
    hedged = re.search(
        r"(about|approximately|around|nearly|roughly|some)\s*$", sentence[: m.start()]
    )
    digits = [i for i, c in enumerate(written) if c.isdigit() and (hedged or c != "0")]
    at = digits[0] if hedged else digits[-1]
    decade = sentence[m.start() + len(written) :].startswith("s")
    for step in range(1, 10):
        new = written[:at] + str((int(written[at]) + step) % 10) + written[at + 1 :]
        value = float(new.replace(",", ""))
        if value not in held and not (decade and any(value <= v <= value + 9 for v in held)):
            return sentence[: m.start()] + new + sentence[m.start() + len(written) :]
    return None


def test_a_changed_number_is_caught(paragraphs: list[str]) -> None:
    changed = [
        (other, p)
        for p in paragraphs
        for s in split_sentences(p)
        if not check_claims(s, [p]) and (other := _other_number(s, p))
    ]
    missed = [s for s, p in changed if not check_claims(s, [p])]
    print(f"\nchanged numbers caught: {len(changed) - len(missed)}/{len(changed)}")
    assert len(changed) > 300
    assert missed == []


def test_a_swapped_name_is_caught(paragraphs: list[str]) -> None:
    rng = random.Random(7)
    names = [(i, n) for i, p in enumerate(paragraphs) for n in sentence_facts(p).names]
    swapped = []
    for i, paragraph in enumerate(paragraphs):
        for sentence in split_sentences(paragraph):
            facts = sentence_facts(sentence)
            if not facts.names or check_claims(sentence, [paragraph]):
                continue
            while True:
                j, other = rng.choice(names)
                if j != i and f" {fold(other)} " not in f" {fold(paragraph)} ":
                    break
            swapped.append((sentence.replace(facts.names[0], other, 1), paragraph))
    caught = sum(1 for s, p in swapped if "name" in kinds(s, p))
    print(f"\nswapped names caught: {caught}/{len(swapped)}")
    assert len(swapped) > 500
    assert caught >= 0.95 * len(swapped)


_AUXILIARY = re.compile(r"\b(is|was|are|were|has|had|did|does|can|will)\b(?! (?:only|just))")


def test_flipped_negations_and_comparatives_are_caught(paragraphs: list[str]) -> None:
    added, removed, flipped = [], [], []
    antonyms = {"older": "younger", "before": "after", "after": "before", "more": "less",
                "first": "last", "last": "first", "larger": "smaller", "largest": "smallest",
                "highest": "lowest", "later": "earlier", "earlier": "later", "most": "least",
                "best": "worst", "longest": "shortest", "northern": "southern"}  # fmt: skip
    comparative = re.compile(rf"\b({'|'.join(antonyms)})\b")
    for p in paragraphs:
        for s in split_sentences(p):
            if check_claims(s, [p]):
                continue
            if (aux := _AUXILIARY.search(s)) and not sentence_facts(s).negated:
                added.append((f"{s[: aux.end()]} not{s[aux.end() :]}", p))
            if neg := re.search(r"\b(?:not|never|no) (?!only|just)", s):
                removed.append((s[: neg.start()] + s[neg.end() :], p))
            if word := comparative.search(s):
                flipped.append((s[: word.start()] + antonyms[word[1]] + s[word.end() :], p))
    rates = {}
    for name, cases, kind in (
        ("added negation", added, "negation"),
        ("removed negation", removed, "negation"),
        ("flipped comparative", flipped, "comparison"),
    ):
        caught = sum(1 for s, p in cases if kind in kinds(s, p))
        rates[name] = caught / len(cases)
        print(f"\n{name} caught: {caught}/{len(cases)}")
    assert len(added) > 300 and len(removed) > 10 and len(flipped) > 100
    assert min(rates.values()) >= 0.8
