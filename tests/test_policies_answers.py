"""normalise() over real-looking outputs: base and chat models, markdown, JSON, reasoners."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.answers import AnswerSpec, normalise

SENTIMENT = AnswerSpec("classify", ("negative", "positive"))
FINANCE = AnswerSpec("classify", ("bearish", "bullish", "neutral"))
BANKING = AnswerSpec(
    "classify",
    (
        "Refund_not_showing_up",
        "apple_pay_or_google_pay",
        "card_arrival",
        "card_delivery_estimate",
        "card_linking",
        "card_payment_wrong_exchange_rate",
        "exchange_rate",
        "lost_or_stolen_card",
        "reverted_card_payment?",
        "top_up_failed",
    ),
)
CHOICE = AnswerSpec("choice", ("A", "B", "C", "D"))
NUMBER = AnswerSpec("number")

SENTIMENT_READ = [
    # terse base models, few-shot continuations with junk after the label
    ("positive", "positive"),
    (" positive", "positive"),
    ("Positive", "positive"),
    ("NEGATIVE", "negative"),
    (" negative.\n\n", "negative"),
    ("positive\n\nReview: the film is a mess\nSentiment: negative", "positive"),
    ("negative\nSentence: a gorgeous, witty film\nLabel: positive", "negative"),
    ("positive\n\nInput: it drags on\nOutput: negative", "positive"),
    ("Negative\n\n### Text 4: Great fun for the whole family.\nSentiment:", "negative"),
    ("positive\n\nQ: Is this review positive or negative?", "positive"),
    # chatty instruction-tuned models
    ("The sentiment of this review is positive.", "positive"),
    ("I think this is negative.", "negative"),
    ("Sure! The sentiment expressed in this sentence is **negative**.", "negative"),
    ("Based on the text, I would classify the sentiment as: Positive", "positive"),
    ("This review is positive. The reviewer praises the acting and the score.", "positive"),
    ("The review expresses a negative opinion of the film.", "negative"),
    ("Answer: negative", "negative"),
    ("Label: Positive", "positive"),
    ("Sentiment: positive", "positive"),
    ("The sentiment is clearly positive.", "positive"),
    ("It is not positive, it's negative.", "negative"),
    ("Overall, the sentiment is negative, despite a few positive remarks on the cast.", "negative"),
    ("Negative. Although the cast is praised, the review is mostly critical.", "negative"),
    ("I'd say positive, since the reviewer calls it a delight.", "positive"),
    ("The answer is positive", "positive"),
    ("positive 😊", "positive"),
    # markdown and quotes
    ("**Positive**", "positive"),
    ("*negative*", "negative"),
    ("`positive`", "positive"),
    ("### Sentiment: Positive", "positive"),
    ("- **Label:** negative", "negative"),
    ('"positive"', "positive"),
    ("'Negative'", "negative"),
    ("“positive”", "positive"),
    # Gemma- and Llama-style chatter
    ("**Negative** \n\nThe review criticizes the film's pacing and wooden dialogue.", "negative"),
    (
        "Based on the content of the review, the sentiment is: **Positive**\n\n"
        "The reviewer describes the film as heartfelt and funny.",
        "positive",
    ),
    (
        "**Sentiment:** Negative\n\n**Explanation:** The reviewer is not positive about the plot.",
        "negative",
    ),
    ("Is this review positive or negative?\n\nPositive", "positive"),
    ("The reviewer complains about the plot and the pacing.\n\nNegative", "negative"),
    ("Negative sentiment.", "negative"),
    ("Not negative, so positive.", "positive"),
    ("1. Positive", "positive"),
    ("It's a positive review overall, though not without negatives.", "positive"),
    # JSON
    ('{"label": "positive"}', "positive"),
    ('```json\n{"sentiment": "Negative"}\n```', "negative"),
    ('{"answer": "NEGATIVE", "confidence": 0.93}', "negative"),
    ('Here is the classification:\n{"label": "positive", "reason": "praises it"}', "positive"),
    ('{"prediction": "negative"}', "negative"),
    # reasoning models
    ("<think>The reviewer says it is boring, so negative.</think>\n\nnegative", "negative"),
    ("Okay, the reviewer loves it, so not negative.\n</think>\n\nPositive", "positive"),
]

FINANCE_READ = [
    ("Bullish", "bullish"),
    ("neutral\n\nTweet: $AAPL hits a record high\nSentiment: bullish", "neutral"),
    ("The tweet is bearish.", "bearish"),
    ("Sentiment: Bullish 📈", "bullish"),
    ("This tweet is neutral; it just reports the earnings date.", "neutral"),
    ("The tweet is bearish, not bullish.", "bearish"),
    ("Neither bullish nor bearish: neutral.", "neutral"),
    ("Label: bearish\nText: Shares of $XYZ jump 10%\nLabel: bullish", "bearish"),
]

BANKING_READ = [
    ("card_arrival", "card_arrival"),
    ("Card arrival", "card_arrival"),
    ("card-arrival", "card_arrival"),
    ("Intent: card_payment_wrong_exchange_rate", "card_payment_wrong_exchange_rate"),
    ("exchange rate", "exchange_rate"),
    ("The customer is asking about the exchange_rate.", "exchange_rate"),
    ("reverted_card_payment?", "reverted_card_payment?"),
    ("Reverted card payment", "reverted_card_payment?"),
    ("Apple Pay or Google Pay", "apple_pay_or_google_pay"),
    ("refund not showing up", "Refund_not_showing_up"),
    ("The intent is **lost_or_stolen_card**.", "lost_or_stolen_card"),
    ("top_up_failed\n\nQuery: my top up did not work\nIntent: top_up_failed", "top_up_failed"),
]

CHOICE_READ = [
    ("(B)", "B"),
    ("B)", "B"),
    ("B.", "B"),
    ("b", "B"),
    (" C", "C"),
    ("Answer: B", "B"),
    ("The answer is b", "B"),
    ("**C**", "C"),
    ("Option D", "D"),
    ("I'd go with (A) because it covers both cases.", "A"),
    ("A: some text", "A"),
    ("A good answer is C", "C"),
    ("A) Paris", "A"),
    ("The correct answer is (D) Berlin.", "D"),
    ("Answer: (A)", "A"),
    ("Final answer: C", "C"),
    ("I would choose B.", "B"),
    ("D\n\nQuestion: What is 2 + 2?\nAnswer: A", "D"),
    ("C. The mitochondria", "C"),
    ("The answer is A because the others are wrong.", "A"),
    ("A is correct.", "A"),
    ("The answer is C, not A.", "C"),
    ("Option A is wrong; the answer is C.", "C"),
    ('{"answer": "B"}', "B"),
    ("<think>Between A and C, C fits the passage better.</think>\nC", "C"),
    ("I think B", "B"),
    ("Based on the passage, the best answer is B.", "B"),
    ("The correct option is d.", "D"),
    ("(C) is the correct answer.", "C"),
    ("B\n\nExplanation: Option A is incorrect because it ignores friction.", "B"),
    ("Answer: The answer is C.", "C"),
    ("The correct answer is: B) 42", "B"),
]

UNPARSABLE = [
    (SENTIMENT, ""),
    (SENTIMENT, "   \n "),
    (SENTIMENT, "positive or negative"),
    (SENTIMENT, "Positive/Negative"),
    (SENTIMENT, "It could be either positive or negative."),
    (SENTIMENT, "neither positive nor negative"),
    (SENTIMENT, "I'm sorry, but I can't determine the sentiment of this text."),
    (SENTIMENT, "As an AI language model, I cannot say whether this review is positive."),
    (SENTIMENT, "Mixed."),
    (SENTIMENT, "pos"),
    (SENTIMENT, "The review is positively glowing"),
    (SENTIMENT, "not positive"),
    (SENTIMENT, "<think>The reviewer is sarcastic, so maybe"),
    (SENTIMENT, "It is hard to say; parts are positive and parts are negative."),
    (SENTIMENT, "Sentiment: positive\nAnswer: negative"),
    (SENTIMENT, "neutral"),
    (SENTIMENT, '{"label": "mixed"}'),
    (SENTIMENT, '{"positive": 0.51, "negative": 0.49}'),
    (SENTIMENT, "Review: the film is great\nSentiment:"),
    (FINANCE, "not bullish"),
    (FINANCE, "Bearish or neutral"),
    (FINANCE, "The sentiment is not neutral."),
    (BANKING, "card_arrival or card_delivery_estimate"),
    (BANKING, "This is about a card."),
    (CHOICE, "The answer is a bit unclear."),
    (CHOICE, "A or B"),
    (CHOICE, "Either A or C could work."),
    (CHOICE, "I'm not sure. It might be A or B."),
    (CHOICE, "E"),
    (CHOICE, "I think the answer depends on context."),
    (CHOICE, "Answer: B\nAnswer: C"),
    (CHOICE, "A good question."),
    (CHOICE, "A and B are wrong, so C."),
    (AnswerSpec("classify", ()), "positive"),
]


@pytest.mark.parametrize(("text", "label"), SENTIMENT_READ)
def test_sentiment_outputs_read_as_their_label(text: str, label: str) -> None:
    assert normalise(text, SENTIMENT) == label


@pytest.mark.parametrize(("text", "label"), FINANCE_READ)
def test_financial_outputs_read_as_their_label(text: str, label: str) -> None:
    assert normalise(text, FINANCE) == label


@pytest.mark.parametrize(("text", "label"), BANKING_READ)
def test_multi_word_labels_match_any_spelling_and_come_back_as_configured(
    text: str, label: str
) -> None:
    assert normalise(text, BANKING) == label


@pytest.mark.parametrize(("text", "letter"), CHOICE_READ)
def test_choice_outputs_read_as_their_letter(text: str, letter: str) -> None:
    assert normalise(text, CHOICE) == letter


@pytest.mark.parametrize(("spec", "text"), UNPARSABLE)
def test_ambiguous_refused_or_empty_outputs_are_unparsable(spec: AnswerSpec, text: str) -> None:
    assert normalise(text, spec) is None


@pytest.mark.parametrize(
    ("padding", "label"), [(" " * 20_000 + "positive", "positive"), ("* " * 10_000 + "x", None)]
)
def test_long_padding_after_a_marker_reads_in_linear_time(padding: str, label: str | None) -> None:
    assert normalise("Answer:" + padding, SENTIMENT) == label


def test_none_is_unparsable() -> None:
    assert normalise(None, SENTIMENT) is None


def test_tables_are_large_enough() -> None:
    read = SENTIMENT_READ + FINANCE_READ + BANKING_READ + CHOICE_READ
    assert len(read) + len(UNPARSABLE) >= 80
    assert len(UNPARSABLE) >= 15


@pytest.mark.parametrize(
    ("text", "label"),
    [("neutral", "neutral"), ("Not neutral.", "not neutral"), ("It is not neutral", "not neutral")],
)
def test_the_longest_overlapping_label_wins(text: str, label: str) -> None:
    assert normalise(text, AnswerSpec("classify", ("neutral", "not neutral"))) == label


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("#### 42", "42"),
        ("Janet sells 16 - 3 - 4 = 9 eggs, making 9 * 2 = $18.\n#### 18", "18"),
        ("The answer is 1,234.", "1234"),
        ("-5", "-5"),
        ("42.0", "42"),
        ("3.50", "3.5"),
        ("0.50", "0.5"),
        ("-0.0", "0"),
        ("The total is $1,234.50", "1234.5"),
        ("x = 5-3 = 2", "2"),
        ("\\boxed{3/4}", "3/4"),
        ("The answer is 42 (6 x 7).", "42"),
        ("It drops to −7 degrees.", "-7"),
        ("She has 3 apples and buys 4 more, so 7 apples.", "7"),
        ("#### 1,000\n\nQuestion: Tom has 5 cars.", "1000"),
        ('{"answer": 12}', "12"),
        ("About 100%", "100"),
        ("Roughly 1, 2 or 3", "3"),
    ],
)
def test_numbers_are_read_and_made_canonical(text: str, number: str) -> None:
    assert normalise(text, NUMBER) == number


@pytest.mark.parametrize("text", ["No idea.", "", "<think>6 times 7 is"])
def test_text_without_a_number_is_unparsable(text: str) -> None:
    assert normalise(text, NUMBER) is None


@pytest.mark.parametrize(
    ("pattern", "text", "answer"),
    [
        (r"Answer:\s*(\w+)", "Let me see.\nAnswer: yes", "yes"),
        (r"\d{3}-\d{4}", "call 555-1234 now", "555-1234"),
        (r"(\d+)?x", "just x", "x"),
        (r"Answer:\s*(\w+)", "no answer here", None),
    ],
)
def test_regex_takes_group_one_or_the_whole_match(
    pattern: str, text: str, answer: str | None
) -> None:
    assert normalise(text, AnswerSpec("regex", pattern=pattern)) == answer


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("  The  Eiffel\nTower. ", "the eiffel tower"),
        ('"Paris!"', "paris"),
        ("<think>France's capital</think>  Paris", "paris"),
        ("...", None),
        ("", None),
    ],
)
def test_text_is_collapsed_lowercased_and_trimmed(text: str, answer: str | None) -> None:
    assert normalise(text, AnswerSpec("text")) == answer


@settings(database=None, derandomize=True)
@given(
    label=st.sampled_from(BANKING.labels),
    case=st.sampled_from([str.lower, str.upper, str.title, str]),
    wrap=st.sampled_from(["{}", "**{}**", '"{}"', "{}.", "Intent: {}", "{}\n\nQuery: hi"]),
)
def test_a_bare_label_reads_as_itself_however_dressed(label: str, case: object, wrap: str) -> None:
    assert callable(case)
    assert normalise(wrap.format(case(label)), BANKING) == label
