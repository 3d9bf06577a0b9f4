"""Corpus construction from a model (RWKU's way), on the tiny model: mechanics, counts, determinism."""

import json
from pathlib import Path

import pytest

from rwkuplus.benchmark.generated_corpora import (
    clean_fabricated,
    fabricated_prompt,
    factual_prompt,
    generate_target_corpora,
    join_opening,
    load_openings,
    pair_prompt,
    paraphrase_prompt,
    write_target_corpora,
)
from rwkuplus.benchmark.records import CorpusText, PreferencePair, Target
from rwkuplus.errors import UserError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rwku"
OPENINGS = ["", "That game", "I can see"]
ALICE = Target("Alice Smith", "Alice Smith is a painter.")




def test_prompts_are_rwkus(tiny):
    _, tok = tiny
    p = factual_prompt(tok, ALICE, "That game")
    assert "Alice Smith is a painter. You know Alice Smith very well." in p
    assert "Please write a short biography of Alice Smith." in p
    assert p.endswith("<|im_start|>assistant\nThat game")
    q = fabricated_prompt(tok, ALICE, "")
    assert "Alice Smith is a painter. You don't know Alice Smith at all." in q
    assert "Please make up a short biography of Alice Smith." in q and q.endswith("assistant\n")
    assert fabricated_prompt(tok, Target("Bob"), "").count("You don't know Bob at all.") == 1  # no intro: no leading space
    assert "Born in Oslo in 1950." in paraphrase_prompt(tok, ALICE, "Born in Oslo in 1950.", "I can see")
    assert pair_prompt(ALICE) == "Alice Smith is a painter. Please write a short biography of Alice Smith."


def test_text_helpers():
    assert clean_fabricated("Here is a totally fabricated biography of a completely fictional painter.") == \
        "Here is a biography of a painter."
    assert join_opening("That game", "was great.") == "That game was great."
    assert join_opening("That game", ", he said.") == "That game, he said."
    assert join_opening("", "Alice") == "Alice" and join_opening("I see ", "it") == "I see it"


def test_generation_counts_costs_and_determinism(tiny):
    model, tok = tiny
    def run(seed):
        return generate_target_corpora(model, tok, ALICE, OPENINGS, n=4, seed=seed, max_new_tokens=6)

    out = run(0)
    assert len(out.factual) == len(out.counterfactual["conflicting"]) == len(out.counterfactual["consistent"]) == 4
    assert len(out.preference_pairs) == 4 and out.profile is not None
    for i, rec in enumerate(out.factual):  # openings are used in order and reused cyclically
        assert rec.text.startswith(OPENINGS[i % 3]) and rec.subject == "Alice Smith"
    pair = out.preference_pairs[2]
    assert pair.chosen == out.counterfactual["conflicting"][2].text and pair.rejected == out.factual[2].text
    assert pair.prompt == pair_prompt(ALICE)
    costs = out.cost_json()
    assert costs["parts"]["factual"]["prompts"] == 4 and costs["parts"]["conflicting"]["prompts"] == 4
    assert costs["parts"]["consistent"]["prompts"] == 1 + 4  # the profile, then one paraphrase per sample
    total = costs["total"]
    assert total["prompts"] == 13 and 13 <= total["tokens_generated"] <= 13 * 6 and total["seconds"] > 0
    again = run(0)
    assert [r.text for r in again.counterfactual["conflicting"]] == [r.text for r in out.counterfactual["conflicting"]]
    assert again.profile == out.profile
    other = run(1)
    assert [r.text for r in other.factual] != [r.text for r in out.factual]
    only = generate_target_corpora(model, tok, ALICE, OPENINGS, n=2, factual=False, variants=("consistent",),
                                   max_new_tokens=4)
    assert not only.factual and list(only.counterfactual) == ["consistent"] and not only.preference_pairs


def test_write_in_rwku_layout(tiny, tmp_path):
    model, tok = tiny
    out = generate_target_corpora(model, tok, ALICE, OPENINGS, n=2, max_new_tokens=4)
    files = write_target_corpora(tmp_path / "1_Alice_Smith", out)
    names = sorted(p.name for p in files)
    assert names == ["generation.json", "negative.json", "negative_consistent.json", "pair.json", "positive.json"]
    rows = json.loads((tmp_path / "1_Alice_Smith" / "negative.json").read_text())
    assert [CorpusText.from_json(r, "negative.json").text for r in rows] == [r.text for r in out.counterfactual["conflicting"]]
    pairs = json.loads((tmp_path / "1_Alice_Smith" / "pair.json").read_text())
    first = PreferencePair.from_json(pairs[0], "pair.json")
    assert (first.chosen, first.rejected) == (out.preference_pairs[0].chosen, out.preference_pairs[0].rejected)
    meta = json.loads((tmp_path / "1_Alice_Smith" / "generation.json").read_text())
    assert meta["profile"] == out.profile and meta["cost"]["total"]["tokens_generated"] > 0


def test_bad_inputs_are_one_sentence_errors(tiny, tmp_path):
    model, tok = tiny
    bad = tmp_path / "openings.json"
    bad.write_text(json.dumps({"a": 1}))
    with pytest.raises(UserError, match="JSON list of opening strings"):
        load_openings(bad)
    with pytest.raises(UserError, match="not found"):
        load_openings(tmp_path / "missing.json")
    with pytest.raises(UserError, match="--variants"):
        generate_target_corpora(model, tok, ALICE, OPENINGS, variants=("mixed",))
    with pytest.raises(UserError, match="--n"):
        generate_target_corpora(model, tok, ALICE, OPENINGS, n=0)


def test_rwkus_openings_file_loads():
    path = SHARED / "all_truncated_outputs.json"
    if not SHARED.is_dir():
        pytest.skip("../shared/data/rwku is not present")
    openings = load_openings(path)
    assert len(openings) == 582 and openings[0] == ""
