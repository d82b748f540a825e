"""The judge's deterministic checks of a free-text answer (arms/checks_text.py): each one passes
a good answer and fails the bad one, naming itself and why. The bad answers are SmolLM2-135M's
own kinds of failure (an echo of the goal, an apology), written out by hand."""

from __future__ import annotations

import pytest

from octollm.arms.checks_text import (
    AskedLength,
    TextCheck,
    asked_language,
    asked_length,
    check_answer,
    detect_language,
    is_prose,
)

pytestmark = pytest.mark.unit

REPLY = "Draft a polite reply to <EMAIL_1> about invoice 4471; her phone is <PHONE_1>."
GOOD_REPLY = (
    "Dear customer,\n\nThank you for your message about invoice 4471. We received your payment "
    "and will send the receipt to <EMAIL_1> today.\n\nKind regards"
)


def by_name(goal: str, draft: str, **kw: object) -> dict[str, TextCheck]:
    return {c.name: c for c in check_answer(goal, draft, **kw)}  # type: ignore[arg-type]


def test_a_good_reply_passes_every_check_that_applies() -> None:
    checks = check_answer(REPLY, GOOD_REPLY)
    assert [c.name for c in checks] == ["empty", "refusal", "echo", "placeholders"]
    assert all(c.passed for c in checks), checks


# --- empty ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("goal", "draft", "passed"),
    [
        (REPLY, "", False),
        (REPLY, "  \n ... ", False),
        (REPLY, "Thanks, noted.", False),  # a writing goal needs more than two words
        (REPLY, GOOD_REPLY, True),
        ("What is the capital of France?", "Paris.", True),  # a question may get one word
        ("Describe Kafka in 3 words.", "Durable distributed log.", True),  # asked to be short
    ],
)
def test_empty(goal: str, draft: str, passed: bool) -> None:
    check = check_answer(goal, draft)[0]
    assert check.name == "empty" and check.passed is passed, check


def test_an_empty_answer_gets_only_the_empty_check() -> None:
    assert [c.name for c in check_answer(REPLY, "")] == ["empty"]


# --- refusal ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "draft",
    [
        # recorded from SmolLM2-135M on the reply example (issue 14)
        "I'm sorry, but as an AI, I don't have the capability to send emails or make phone calls.",
        "As an AI language model, I can write a reply for you.",
        "I am unable to help with that request.",
        "I can't assist with invoices.",
        "I apologize, but I cannot draft that reply.",
        "I'm just an AI, so here is a template instead.",
    ],
)
def test_refusals_and_apologies_fail(draft: str) -> None:
    check = by_name(REPLY, draft)["refusal"]
    assert not check.passed and "instead of answering (it " in check.detail


def test_a_refusal_is_named_never_quoted() -> None:
    check = by_name(REPLY, "So sorry Jane Doe, but I can't write that.")["refusal"]
    assert not check.passed and "apologises and declines" in check.detail
    assert "Jane" not in check.detail  # the draft is not redacted yet


@pytest.mark.parametrize(
    "draft",
    [
        GOOD_REPLY,
        # an apology inside a real reply is part of the answer, not a refusal
        "Dear customer, I'm sorry for the delay with invoice 4471; it is now paid in full.",
        "I'm sorry, but the invoice 4471 is still open; please pay it by Friday.",
        "Sorry, but I can't refund invoice 4471: it was paid after the deadline.",
    ],
)
def test_an_apology_inside_an_answer_is_not_a_refusal(draft: str) -> None:
    assert by_name(REPLY, draft)["refusal"].passed


def test_a_goal_that_asks_to_decline_may_get_a_refusal() -> None:
    goal = "Write a short note declining the meeting invitation for Friday."
    check = by_name(goal, "I'm sorry, but I cannot help with that meeting on Friday.")["refusal"]
    assert check.passed and "asks for a refusal" in check.detail


# --- echo -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "draft",
    [
        REPLY,  # verbatim (recorded from SmolLM2-135M, issue 14)
        "Sure! Here is a polite reply to <EMAIL_1> about invoice 4471.",
        "draft polite reply <EMAIL_1> invoice 4471 phone <PHONE_1>",
    ],
)
def test_an_echo_of_the_goal_fails(draft: str) -> None:
    check = by_name(REPLY, draft)["echo"]
    assert not check.passed and "repeats the task" in check.detail


def test_an_echo_of_the_repair_feedback_fails_too() -> None:
    feedback = ["echo: the answer repeats the task instead of answering it"]
    draft = f"{REPLY} A previous answer failed review; fix this: {feedback[0]}"
    assert by_name(REPLY, draft)["echo"].passed  # without the feedback, its words look new
    assert not by_name(REPLY, draft, feedback=feedback)["echo"].passed


@pytest.mark.parametrize(
    ("goal", "draft"),
    [
        (REPLY, GOOD_REPLY),
        ("Is 7 prime?", "7 is prime."),  # a short question may be restated in the answer
        (
            "Explain what a Kafka consumer group is.",
            "A Kafka consumer group is a set of consumers that split a topic's partitions.",
        ),
    ],
)
def test_an_answer_that_says_something_new_is_not_an_echo(goal: str, draft: str) -> None:
    assert by_name(goal, draft)["echo"].passed


# --- length asked in the goal -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("goal", "asked"),
    [
        ("Explain Kafka consumer groups in three sentences.", AskedLength("==", 3, "sentences")),
        ("Summarise the docs in one paragraph.", AskedLength("==", 1, "paragraphs")),
        ("Summarise this in 50 words.", AskedLength("<=", 50, "words")),
        ("Describe it in at most 2 sentences", AskedLength("<=", 2, "sentences")),
        ("Write a two-sentence summary of Kafka.", AskedLength("==", 2, "sentences")),
        ("Give three bullet points on caching.", AskedLength("==", 3, "bullets")),
        ("Reply in about 100 words.", AskedLength("~", 100, "words")),
        ("Translate these three words into French.", None),  # not a length of the answer
        ("Explain Kafka.", None),
    ],
)
def test_asked_length(goal: str, asked: AskedLength | None) -> None:
    assert asked_length(goal) == asked


@pytest.mark.parametrize(
    ("draft", "passed"),
    [
        ("Kafka stores records. Consumers read them. Groups share partitions.", True),
        ("Kafka stores records.", False),
        ("One. Two. Three. Four.", False),
    ],
)
def test_length(draft: str, passed: bool) -> None:
    check = by_name("Explain Kafka consumer groups in three sentences.", draft)["length"]
    assert check.passed is passed, check
    if not passed:
        assert "the task asks for 3 sentences" in check.detail


def test_a_word_limit_is_a_ceiling() -> None:
    goal = "Summarise Kafka in 10 words."
    assert by_name(goal, "Kafka is a durable, partitioned, replicated log.")["length"].passed
    long = "Kafka is a durable, partitioned and replicated log that many consumers read at once."
    check = by_name(goal, long)["length"]
    assert not check.passed and "at most 10 words" in check.detail


# --- language ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("goal", "language"),
    [
        ("Explain Kafka in French.", "French"),
        ("Translate the note into German.", "German"),
        ("Réponds en français : qu'est-ce que Kafka ?", "French"),
        ("Antworte auf Deutsch.", "German"),
        ("Explain Kafka.", None),
    ],
)
def test_asked_language(goal: str, language: str | None) -> None:
    assert asked_language(goal) == language


def test_detect_language_by_function_words() -> None:
    french = detect_language("Le groupe est une liste de processus qui lisent les partitions.")
    assert next(iter(french)) == "French"
    hits = detect_language("Die Gruppe liest die Partitionen und ist nicht allein.")
    assert next(iter(hits)) == "German"


def test_language() -> None:
    goal = "Explain what a Kafka consumer group is, in French."
    french = "Un groupe de consommateurs est un ensemble de processus qui lisent les partitions."
    english = "A consumer group is a set of processes that read the partitions of a topic."
    assert by_name(goal, french)["language"].passed
    check = by_name(goal, english)["language"]
    assert (
        not check.passed
        and "reads as English" in check.detail
        and "asks for French" in (check.detail)
    )
    # too little text to tell: not checked, so not passed (fail closed)
    unknown = by_name(goal, "Kafka Kafka Kafka Kafka.")["language"]
    assert not unknown.passed and unknown.unverified


# --- placeholders -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("draft", "why"),
    [
        ("Dear customer, we will email jane@example.com about invoice 4471.", "raw EMAIL"),
        ("Dear customer, call us back on +1 415 555 0100 about invoice 4471.", "raw PHONE"),
        ("Dear customer, we will write to <EMAIL_2> about invoice 4471 soon.", "<EMAIL_2>"),
        ("Dear EMAIL_1, thanks for asking about invoice 4471, all is paid now.", "alters"),
        ("Dear customer, we will write to <email_1> about invoice 4471 soon.", "alters"),
    ],
)
def test_placeholders_are_kept_never_unredacted(draft: str, why: str) -> None:
    check = by_name(REPLY, draft)["placeholders"]
    assert not check.passed and why in check.detail, check
    assert "jane" not in check.detail and "415" not in check.detail  # never quotes the value


def test_placeholders_pass_when_kept_or_unused_and_dates_are_not_phones() -> None:
    assert by_name(REPLY, GOOD_REPLY)["placeholders"].passed
    plain = "Dear customer, invoice 4471 of 2026-11-25 is paid; thank you for your patience."
    assert by_name(REPLY, plain)["placeholders"].passed


def test_placeholders_in_the_context_count_as_given() -> None:
    goal = "Draft a reply to the customer in the context."
    draft = "Dear <PERSON_1>, thank you; your order has shipped and will arrive Monday."
    assert not by_name(goal, draft)["placeholders"].passed  # invented
    assert by_name(goal, draft, context="From <PERSON_1>: where is my order?")[
        "placeholders"
    ].passed


def test_no_placeholders_anywhere_means_no_placeholder_check() -> None:
    assert "placeholders" not in by_name("Explain Kafka.", "Kafka is a distributed log.")


# --- which drafts are prose -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("draft", "prose"),
    [
        ("Kafka is a log.", True),
        ("42", True),
        ("```python\ndef add(a, b):\n    return a + b\n```", False),
        ("def add(a, b):\n    return a + b", False),
        ('{"a": 1}', False),
    ],
)
def test_is_prose(draft: str, prose: bool) -> None:
    assert is_prose(draft) is prose


def test_code_gets_no_prose_checks() -> None:
    code = "```python\ndef add(a, b):\n    return a + b\n```"
    assert [c.name for c in check_answer("Write add(a, b) in three sentences.", code)] == ["empty"]


def test_short_code_is_not_too_short() -> None:
    assert check_answer("Write code that sets x to 1.", "x = 1")[0].passed
    assert check_answer("List three primes.", "2, 3, 5")[0].passed
