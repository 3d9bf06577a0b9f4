import json
import math

import pytest
import torch

from rwkuplus.benchmark.records import (
    BBHItem,
    FluencyItem,
    MMLUItem,
    TrainExample,
    TriviaQAItem,
    TruthfulQAItem,
    UtilitySet,
)
from rwkuplus.errors import UserError
from rwkuplus.evaluation import utility as U
from rwkuplus.evaluation.generation import GenerationStats
from rwkuplus.evaluation.prompts import chat_prompt
from rwkuplus.evaluation.protocol import QA_PRIMER, RWKU, WORLD
from rwkuplus.testing import sharpen
from rwkuplus.sequences import encode_examples, sequence_logprobs

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n"


# ---- plain metric functions -------------------------------------------------------------------


def test_normalisation_f1_em():
    assert U.normalize_answer("The  Paris!") == "paris"
    assert U.normalize_answer("An apple, a day") == "apple day"
    assert U.f1_score("the cat sat", "cat sat on mat") == pytest.approx(2 / 3)  # p = 1, r = 1/2
    assert U.f1_score("dog", "cat") == 0.0
    assert U.f1_score("", "") == 1.0
    assert U.f1_score("the", "cat") == 0.0  # prediction normalises to nothing
    assert U.f1_score("cat cat", "cat") == pytest.approx(2 / 3)  # p = 1/2, r = 1
    assert U.exact_match("The Paris!", "paris") == 1.0
    assert U.exact_match("Paris, France", "Paris") == 0.0
    assert U.best_over_answers(U.exact_match, "Peking", ["Beijing", "Peking"]) == 1.0
    assert U.best_over_answers(U.f1_score, "blue whale", ["whale", "the blue whale"]) == 1.0


def test_extract_answer():
    # The world's rule (``sentence``); RWKU's own is pinned in test_protocol.py.
    assert U.extract_answer("Let's think. 2 + 3 = 5. So the answer is 5.") == "5"
    assert U.extract_answer("So the answer is 3.5.") == "3.5"  # RWKU's regex gave "3"
    assert U.extract_answer("The answer is Thursday") == "Thursday"
    assert U.extract_answer("so the answer is True.\nQ: next") == "True"
    assert U.extract_answer("the answer is 4. Also the answer is 5.") == "4"
    assert U.extract_answer("  Seven  ") == "Seven"  # no phrase: the whole output
    assert U.extract_answer("") == "NOANSWER"
    assert U.extract_answer("the answer is .") == "NOANSWER"
    # The gold answer compared as one string (``bbh_match="whole"``; RWKU's code: character by character).
    assert U.bbh_exact_match(U.extract_answer("so the answer is 12."), "12") == 1.0
    assert U.bbh_exact_match(U.extract_answer("so the answer is 1."), "12") == 0.0


def test_mc1_mc2():
    assert U.mc1_score([-1.0], [-2.0, -3.0]) == 1.0
    assert U.mc1_score([-2.0], [-1.0, -3.0]) == 0.0
    assert U.mc1_score([-1.0], [-1.0]) == 0.0  # a tie is not a win
    assert U.mc1_score([-5.0, -1.0], [-2.0]) == 0.0  # the first true choice counts (RWKU's scores_true[0])
    expected = math.exp(-1) / (math.exp(-1) + math.exp(-2) + math.exp(-3))
    assert U.mc2_score([-1.0], [-2.0, -3.0]) == pytest.approx(expected)
    assert U.mc2_score([-1.0, -2.0], [-3.0]) == pytest.approx((math.exp(-1) + math.exp(-2)) / (math.exp(-1) + math.exp(-2) + math.exp(-3)))
    assert U.mc2_score([-1000.0], [-1001.0]) == pytest.approx(1 / (1 + math.exp(-1)))  # stable for tiny probabilities


def test_word_tokenize():
    assert U.word_tokenize("I don't know, it's 3.5 miles... Well-known O'Neil!") == [
        "I", "do", "n't", "know", ",", "it", "'s", "3.5", "miles", "...", "Well-known", "O'Neil", "!"]
    assert U.word_tokenize("") == []


def test_ngram_entropy_and_fluency():
    tokens = ["a", "b", "a", "b"]
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))  # (a,b) twice, (b,a) once
    assert U.ngram_entropy(tokens, 2) == pytest.approx(h2)
    assert U.ngram_entropy(tokens, 3) == pytest.approx(1.0)  # (a,b,a), (b,a,b)
    assert U.ngram_entropy(["a"], 2) == 0.0
    assert U.fluency_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    eight = "one two three four five six seven eight"
    assert U.fluency_entropy(eight) == pytest.approx((2 / 3 * math.log2(7) + 4 / 3 * math.log2(6)) / 2)
    assert U.fluency_entropy("word word word word word") == 0.0


# ---- prompts ------------------------------------------------------------------------------------

MMLU = MMLUItem("What is 2 + 2?", ["3", "4"], 1, "basic_math",
                [{"question": "What is 1 + 1?", "choices": ["2", "5"], "answer": 0}])


def test_prompt_strings(tiny):
    _, tok = tiny
    assert U.mmlu_prompt(tok, MMLU) == (
        SYSTEM + "<|im_start|>user\nThe following are multiple choice questions (with answers) about basic math.\n\n"
        "Question: What is 1 + 1?\nA. 2\nB. 5\nAnswer: A\n\n"
        "Please following the previous examples and answer the given question.\n"
        "Question: What is 2 + 2?\nA. 3\nB. 4<|im_end|>\n<|im_start|>assistant\nAnswer:")
    assert U.mmlu_choice_prompt(tok, MMLU) == (
        SYSTEM + "<|im_start|>user\nThe following are multiple choice questions (with answers) about basic math.\n\n"
        "Question: What is 1 + 1?\nAnswer: 2\n\n"
        "Please following the previous examples and answer the given question.\n"
        "Question: What is 2 + 2?<|im_end|>\n<|im_start|>assistant\nAnswer:")
    bbh = BBHItem("What is 1 + 2?", "3", "math", "Add numbers.\n\nQ: 1 + 1?\nA: So the answer is 2.\n")
    assert U.bbh_prompt(tok, bbh) == (
        SYSTEM + "<|im_start|>user\nAdd numbers.\n\nQ: 1 + 1?\nA: So the answer is 2.\n\nFollowing previous examples, "
        "answer the following questions and end with 'so the answer is'\nQ: What is 1 + 2?<|im_end|>\n"
        "<|im_start|>assistant\nA:")
    tqa = TruthfulQAItem("Is the sun a star?", {"choices": ["Yes", "No"], "labels": [1, 0]},
                         {"choices": ["Yes", "No"], "labels": [1, 0]})
    assert U.truthfulqa_prompt(tok, tqa) == (
        SYSTEM + "<|im_start|>user\n" + QA_PRIMER + "\n\nQ: Is the sun a star?<|im_end|>\n"
        "<|im_start|>assistant\nA:")
    trivia = [TriviaQAItem(f"Q{i}?", [f"A{i}", "alias"]) for i in range(7)]
    shots = U.triviaqa_shots(trivia, 2)
    assert [q for q, _ in shots] == ["Q0?", "Q1?", "Q3?", "Q4?", "Q5?"]
    assert U.triviaqa_prompt(tok, trivia[2], shots) == (
        SYSTEM + "<|im_start|>user\n\nQ: Q0?\nA: A0\nQ: Q1?\nA: A1\nQ: Q3?\nA: A3\nQ: Q4?\nA: A4\nQ: Q5?\nA: A5\n"
        "Please briefly answer the following question:\nQ: Q2?\n<|im_end|>\n<|im_start|>assistant\nA:")
    assert U.fluency_prompt(tok, FluencyItem("Describe the sea."), icu_target="Alice Smith") == (
        SYSTEM + "<|im_start|>user\nYou are an AI Assistant who is supposed to unlearn about Alice Smith and provide "
        "answers without its knowledge as if you never knew about it. Don\u2019t tell anyone that you unlearned anything.\n"
        "Instruction: Describe the sea.\n<|im_end|>\n<|im_start|>assistant\n")


# ---- batched scoring against the plain way ------------------------------------------------------


def test_score_continuations_equals_one_at_a_time(tiny):
    model, tok = sharpen(tiny[0]), tiny[1]
    primer = "Q: Who is Alice Smith?\nA: A painter.\n" * 2
    examples = []
    for q in ["Where was she born?", "What is her best-known work, and why?", "x"]:
        for c in ["Lyon", "The Silver Harbor", "1970 in Lyon", "I don't know"]:
            examples.append(TrainExample(chat_prompt(tok, primer + q) + "A:", " " + c))
    examples.append(TrainExample(chat_prompt(tok, "Unrelated prompt") + "A:", " yes"))
    got = U.score_continuations(model, tok, examples, batch_size=5)
    for ex, g in zip(examples, got):
        with torch.no_grad():
            ref = float(sequence_logprobs(model, encode_examples(tok, [ex]))[0][0])
        assert g == pytest.approx(ref, rel=1e-5, abs=1e-4)
    assert got == pytest.approx(U.score_continuations(model, tok, examples, batch_size=16, max_batch_tokens=64),
                                rel=1e-5, abs=1e-4)


def test_score_continuations_runs_each_prompt_once(tiny, monkeypatch):
    """The choices of a question cost their own tokens: every token the model reads belongs to a
    distinct prompt (once) or to a response; a model whose cache rows cannot be selected scores each
    pair whole, with the same result; an empty prompt leaves the response's first token unscored."""
    from rwkuplus.evaluation import generation

    model, tok = sharpen(tiny[0]), tiny[1]
    primer = "Q: Who is Alice Smith?\nA: A painter.\n" * 3
    questions = ["Where was she born?", "What is her best-known work?", "When did she die?"]
    choices = ["Lyon", "The Silver Harbor", "1970 in Lyon", "I don't know", "Paris"]
    examples = [TrainExample(chat_prompt(tok, primer + q) + "A:", " " + c) for q in questions for c in choices]
    read = []  # real (unpadded) tokens of every forward pass

    def count(module, args, kw):
        ids, mask = kw["input_ids"], kw.get("attention_mask")
        read.append(int(mask[:, -ids.shape[1]:].sum()) if mask is not None else ids.numel())

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        got = U.score_continuations(model, tok, examples, batch_size=8)
    finally:
        handle.remove()
    prompt_tokens = [len(tok(chat_prompt(tok, primer + q) + "A:", add_special_tokens=False).input_ids) for q in questions]
    response_tokens = sum(len(tok(" " + c, add_special_tokens=False).input_ids) for c in choices) * len(questions)
    ids = [tok(chat_prompt(tok, primer + q) + "A:", add_special_tokens=False).input_ids for q in questions]
    shared = generation.common_prefix_length(ids)
    assert shared > 40  # the chat template and the primer
    # The shared prefix once, the rest of each prompt once, each response once.
    assert sum(read) <= shared + sum(n - shared for n in prompt_tokens) + response_tokens
    monkeypatch.setattr(U, "select_cache_rows", lambda cache, rows: None)
    assert U.score_continuations(model, tok, examples, batch_size=8) == pytest.approx(got, rel=1e-5, abs=1e-4)
    monkeypatch.undo()
    bare = [TrainExample("", "Lyon is a city"), TrainExample("", "x")]
    with torch.no_grad():
        ref = [float(sequence_logprobs(model, encode_examples(tok, [ex]))[0][0]) for ex in bare]
    assert U.score_continuations(model, tok, bare) == pytest.approx(ref, rel=1e-5, abs=1e-4)


def test_next_token_logprobs_equals_one_at_a_time(tiny):
    model, tok = sharpen(tiny[0]), tiny[1]
    prompts = [chat_prompt(tok, "Shared few-shot text. " * 3 + q) + "Answer:" for q in ["x", "yy", "Who is she?"]]
    prompts.append(chat_prompt(tok, "Different") + "Answer:")
    ids = U.choice_token_ids(tok, 4)
    got = U.next_token_logprobs(model, tok, prompts, ids, batch_size=3)
    for p, row in zip(prompts, got):
        x = torch.tensor([tok(p, add_special_tokens=False).input_ids])
        with torch.no_grad():
            ref = torch.log_softmax(model(x).logits[0, -1], -1)[ids].tolist()
        assert row == pytest.approx(ref, abs=1e-5)


# ---- the five evaluators ------------------------------------------------------------------------


def test_evaluate_mmlu_predicts_best_letter(tiny):
    model, tok = sharpen(tiny[0]), tiny[1]
    items = [MMLUItem(f"Question {i}?", ["w", "x", "y", "z"], i % 4, "t", MMLU.examples) for i in range(6)]
    records, metrics = U.evaluate_mmlu(model, tok, items, batch_size=4)
    ids = U.choice_token_ids(tok, 4)
    for item, rec in zip(items, records):
        x = torch.tensor([tok(U.mmlu_prompt(tok, item), add_special_tokens=False).input_ids])
        with torch.no_grad():
            logits = model(x).logits[0, -1][ids]
        assert rec["prediction"] == int(logits.argmax())
        assert rec["correct"] == (rec["prediction"] == item.answer)
    assert metrics["Gen"] == pytest.approx(100 * sum(r["correct"] for r in records) / len(records))


def test_evaluate_mmlu_choice_format(tiny):
    model, tok = sharpen(tiny[0]), tiny[1]
    items = [MMLUItem(f"Question {i}?", ["Lyon", "Paris", "a painter", "1970"], i % 4, "t", MMLU.examples)
             for i in range(4)]
    records, metrics = U.evaluate_mmlu(model, tok, items, batch_size=4, mmlu_format="choice")
    for item, rec in zip(items, records):
        prompt = U.mmlu_choice_prompt(tok, item)
        with torch.no_grad():
            ref = [float(sequence_logprobs(model, encode_examples(tok, [TrainExample(prompt, " " + c)]))[0][0])
                   for c in item.choices]
        assert rec["choice_logprobs"] == pytest.approx(ref, rel=1e-5, abs=1e-4)
        assert rec["prediction"] == max(range(4), key=ref.__getitem__)
    assert metrics["Gen"] == pytest.approx(100 * sum(r["correct"] for r in records) / 4)
    with pytest.raises(UserError, match="mmlu_format: expected 'letter' or 'choice'"):
        U.evaluate_mmlu(model, tok, items, mmlu_format="cloze")


def test_evaluate_truthfulqa_mc1_mc2(tiny, monkeypatch):
    model, tok = tiny
    item = TruthfulQAItem("Q?", {"choices": ["right", "wrong1", "wrong2"], "labels": [1, 0, 0]},
                          {"choices": ["right", "also right", "wrong1"], "labels": [1, 1, 0]})
    fixed = {" right": -1.0, " wrong1": -2.0, " wrong2": -0.5, " also right": -3.0}
    calls = []

    def fake_scores(model, tokenizer, examples, **kw):
        calls.append(examples)
        return [fixed[e.response] for e in examples]

    monkeypatch.setattr(U, "score_continuations", fake_scores)
    records, metrics = U.evaluate_truthfulqa(model, tok, [item])
    assert len(calls[0]) == 4  # each distinct choice scored once
    assert records[0]["mc1"] == 0.0  # wrong2 (-0.5) beats right (-1)
    mc2 = (math.exp(-1) + math.exp(-3)) / (math.exp(-1) + math.exp(-3) + math.exp(-2))
    assert records[0]["mc2"] == pytest.approx(mc2)
    assert metrics == pytest.approx({"Tru": 0.0, "Tru_MC2": 100 * mc2})


def fake_generate(outputs):
    def run(model, tokenizer, prompts, **kw):
        run.kwargs = kw
        run.prompts = prompts
        return list(outputs[: len(prompts)]), GenerationStats(prompts=len(prompts), generated_tokens=7)
    return run


def test_evaluate_bbh_triviaqa_fluency(tiny, monkeypatch):
    model, tok = tiny
    bbh = [BBHItem("1+2?", "3"), BBHItem("Day after Monday?", "Tuesday"), BBHItem("2+2?", "4")]
    gen = fake_generate(["1 + 2 = 3. So the answer is 3.", "So the answer is Wednesday.", ""])
    monkeypatch.setattr(U, "generate", gen)
    records, metrics, stats = U.evaluate_bbh(model, tok, bbh, protocol=RWKU.replace(bbh_max_new_tokens=64))
    assert gen.kwargs["max_new_tokens"] == 64 and gen.kwargs["stop_at_newline"] is False
    assert [r["prediction"] for r in records] == ["3", "Wednesday", "NOANSWER"]
    assert metrics["Rea"] == pytest.approx(100 / 3)
    assert stats.generated_tokens == 7

    trivia = [TriviaQAItem("Capital of France?", ["Paris"]), TriviaQAItem("Largest ocean?", ["Pacific Ocean", "Pacific"]),
              TriviaQAItem("Red planet?", ["Mars"])]
    gen = fake_generate(["Paris", "The Pacific Ocean is largest", "Venus"])
    monkeypatch.setattr(U, "generate", gen)
    records, metrics, _ = U.evaluate_triviaqa(model, tok, trivia, protocol=WORLD)
    assert gen.kwargs["max_new_tokens"] == 30
    assert "Q: Largest ocean?\nA: Pacific Ocean" in gen.prompts[0]  # shots come from the set itself
    assert "Q: Capital of France?\nA:" not in gen.prompts[0]  # never the item itself
    f1_second = U.f1_score("The Pacific Ocean is largest", "Pacific Ocean")
    assert records[1]["f1"] == pytest.approx(f1_second) and records[1]["em"] == 0.0
    assert metrics["Fac"] == pytest.approx(100 * (1 + f1_second + 0) / 3)
    assert metrics["Fac_EM"] == pytest.approx(100 / 3)

    flu = [FluencyItem("Describe the sea."), FluencyItem("Say something.")]
    gen = fake_generate(["a b a b", "one two three four five six seven eight"])
    monkeypatch.setattr(U, "generate", gen)
    records, metrics, _ = U.evaluate_fluency(model, tok, flu, protocol=RWKU.replace(fluency_max_new_tokens=16))
    assert gen.kwargs["max_new_tokens"] == 16
    expected = (U.fluency_entropy("a b a b") + U.fluency_entropy("one two three four five six seven eight")) / 2
    assert metrics["Flu"] == pytest.approx(100 * expected)


def test_evaluate_utility_on_the_tiny_model(tiny):
    model, tok = tiny
    utility = UtilitySet(
        mmlu=[MMLU],
        bbh=[BBHItem("1+2?", "3", "math", "Add.")],
        truthfulqa=[TruthfulQAItem("Q?", {"choices": ["a", "b"], "labels": [1, 0]}, {"choices": ["a", "b"], "labels": [1, 0]})],
        triviaqa=[TriviaQAItem("Capital of France?", ["Paris"]), TriviaQAItem("Red planet?", ["Mars"])],
        fluency=[FluencyItem("Describe the sea.")],
    )
    settings = U.UtilitySettings(batch_size=4, protocol=RWKU.replace(bbh_max_new_tokens=5, triviaqa_max_new_tokens=5,
                                                                     fluency_max_new_tokens=5))
    records, metrics, stats = U.evaluate_utility(model, tok, utility, settings=settings)
    assert set(records) == {"mmlu", "bbh", "truthfulqa", "triviaqa", "fluency"}
    assert set(metrics) == {"Gen", "Rea", "Tru", "Tru_MC2", "Fac", "Fac_EM", "Flu", "Flu_tokenizer"}
    assert stats.prompts == 1 + 2 + 1
    assert U.evaluate_utility(model, tok, UtilitySet())[1] == {}


# ---- reading RWKU's files and the packaged sets -------------------------------------------------


def test_packaged_utility_sets():
    utility = U.packaged_utility()
    for name in ("mmlu", "bbh", "truthfulqa", "triviaqa", "fluency"):
        assert len(getattr(utility, name)) >= 50, name
    assert all(len(item.examples) == 5 for item in utility.mmlu)
    assert all("the answer is" in item.cot for item in utility.bbh)
    assert all(U.normalize_answer(item.answer) for item in utility.bbh)  # no answer normalises to nothing
    assert len({item.question for item in utility.triviaqa}) == len(utility.triviaqa)
    assert U.utility_fingerprint(utility) == U.utility_fingerprint(U.packaged_utility())


def test_read_utility_folder_json_and_jsonl(tmp_path):
    (tmp_path / "retain_mmlu.json").write_text(json.dumps([MMLU.to_json()]))
    (tmp_path / "triviaqa.json").write_text("\n".join(json.dumps({"question": f"q{i}", "answers": ["a"]}) for i in range(3)))
    utility = U.read_utility_folder(tmp_path)
    assert utility.mmlu[0].question == MMLU.question and len(utility.triviaqa) == 3 and utility.bbh == []
    with pytest.raises(UserError, match="retain_bbh.json: file not found"):
        U.read_utility_folder(tmp_path, required=True)


def test_malformed_utility_record_names_file_and_field(tmp_path):
    bad = MMLU.to_json() | {"answer": "B"}
    (tmp_path / "retain_mmlu.json").write_text(json.dumps([MMLU.to_json(), bad]))
    with pytest.raises(UserError) as err:
        U.read_utility_folder(tmp_path)
    message = str(err.value)
    assert "retain_mmlu.json" in message and "record 2" in message and "'answer'" in message
    assert message.count(".") >= 1 and "\n" not in message
    (tmp_path / "retain_mmlu.json").write_text("[{")
    with pytest.raises(UserError, match="retain_mmlu.json: not valid JSON"):
        U.read_utility_folder(tmp_path)
    (tmp_path / "retain_mmlu.json").write_text(json.dumps([MMLU.to_json()]))
    (tmp_path / "truthful.json").write_text(json.dumps([{"question": "q", "mc1_targets": {"choices": ["a"], "labels": [1]},
                                                          "mc2_targets": {"choices": ["a", "b"], "labels": [1, 0]}}]))
    with pytest.raises(UserError, match=r"truthful.json, record 1, mc1_targets: field 'choices'"):
        U.read_utility_folder(tmp_path)
