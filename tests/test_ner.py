"""The disease tagger: windows and offsets, decoding, propagation, save/load through plain transformers, training."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from biosyn.data.records import Document, Mention
from biosyn.ner.labels import BEGIN, INSIDE, LABELS, OUTSIDE
from biosyn.ner.propagation import propagate
from biosyn.ner.tagger import DiseaseTagger
from biosyn.ner.windows import span_confidence, tag_spans, tokenize, viterbi_bio, windows
from biosyn.training.tagger import TaggerTrainingConfig, train_tagger, word_labels
from tiny import tiny_tagger


def forced(tagger: DiseaseTagger, label: int) -> DiseaseTagger:
    """Makes the tagger predict `label` for every token, whatever the context."""
    with torch.no_grad():
        tagger.model.classifier.weight.zero_()
        tagger.model.classifier.bias.fill_(-10.0)
        tagger.model.classifier.bias[label] = 10.0
    return tagger


@given(st.integers(0, 400), st.integers(3, 60), st.data())
@settings(max_examples=200, deadline=None)
def test_windows_cover_every_token_and_own_each_once(n, size, data):
    overlap = data.draw(st.integers(0, size - 1))
    spans = windows(n, size, overlap)
    owned = [i for _, _, a, b in spans for i in range(a, b)]
    assert owned == list(range(n))
    for s, e, a, b in spans:
        assert 0 <= s <= a <= b <= e <= n and e - s <= size


def test_windows_refuse_an_overlap_as_large_as_the_window():
    with pytest.raises(ValueError, match="overlap"):
        windows(100, 10, 10)


def test_viterbi_never_starts_an_entity_with_inside():
    lp = np.log(np.array([[0.1, 0.2, 0.7], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]]))
    assert viterbi_bio(lp).tolist() == [BEGIN, INSIDE, OUTSIDE]
    assert tag_spans(np.array([0, 1, 2, 0, 2, 2, 1])) == [(1, 3), (4, 6), (6, 7)]


AWKWARD = ("Familial adenomatous polyposis (FAP)\r\nis caused by APC. 乳腺癌 — ovarian cancer 😀 and\u2028Wilson's disease. "
           "Ｆｕｌｌ-width café-au-lait spots\tmacules; \ud800 end")


@pytest.mark.parametrize("repeat", [1, 12])  # 12: many windows of 32 tokens
def test_every_word_is_found_exactly_once_at_its_offsets(tmp_path, repeat):
    tagger = forced(tiny_tagger(tmp_path / "t", propagate=False), BEGIN)
    text = AWKWARD * repeat
    [spans] = tagger.tag([text])
    words = tokenize(tagger.tokenizer, text).words
    assert [(m.start, m.end) for m in spans] == words
    assert all(m.text == text[m.start:m.end] and m.text.strip() == m.text and m.text for m in spans)
    assert "乳" in {m.text for m in spans} and "\r" not in "".join(m.text for m in spans)


def test_inside_everywhere_is_one_span_over_the_whole_text(tmp_path):
    tagger = forced(tiny_tagger(tmp_path / "t", propagate=False), INSIDE)
    text = "  hereditary breast cancer " * 20 + " "
    [spans] = tagger.tag([text])
    assert [(m.start, m.end) for m in spans] == [(2, len(text.rstrip()))]


def test_empty_and_blank_texts_have_no_mentions(tmp_path):
    tagger = forced(tiny_tagger(tmp_path / "t"), BEGIN)
    assert tagger.tag(["", "   \n\t", "\x00\x01"]) == [[], [], []]
    with pytest.raises(TypeError):
        tagger.tag("a text, not a list")


def test_a_spans_confidence_is_the_probability_of_its_least_sure_tag(tmp_path):
    #                 O    B    I
    probs = np.array([[0.9, 0.05, 0.05],   # "Lynch": O
                      [0.1, 0.85, 0.05],   # "syndrome": B
                      [0.3, 0.1, 0.6],     # "type": I, the least sure
                      [0.02, 0.08, 0.9]])  # "II": I
    assert tag_spans(viterbi_bio(np.log(probs))) == [(1, 4)]
    assert span_confidence(np.log(probs), 1, 4) == pytest.approx(0.6)
    assert span_confidence(np.log(probs), 1, 2) == pytest.approx(0.85)  # one word: its B
    tagger = forced(tiny_tagger(tmp_path / "t"), BEGIN)
    [spans] = tagger.tag(["wilson disease"])
    assert [m.text for m in spans] == ["wilson", "disease"] and all(m.confidence > 0.99 for m in spans)


def test_propagation_tags_repeats_and_short_forms_of_tagged_long_forms():
    text = "Hereditary nonpolyposis colorectal cancer (HNPCC) is common. HNPCC and colorectal cancer run in families; HNPCCs no."
    first = Mention(0, 41, text[0:41], "Disease")
    inner = Mention(24, 41, "colorectal cancer", "Disease")
    out = propagate(text, [first], {"HNPCC": "Hereditary nonpolyposis colorectal cancer"})
    assert [(m.start, m.end, m.text) for m in out] == [
        (0, 41, "Hereditary nonpolyposis colorectal cancer"), (43, 48, "HNPCC"), (61, 66, "HNPCC")]
    out = propagate(text, [inner])
    assert [m.text for m in out] == ["colorectal cancer", "colorectal cancer"]
    assert propagate(text, []) == []
    # Abbreviations alone: no repeats; a short form follows its tagged long form, and a tagged short
    # form whose long form is untagged ("von Hippel-Lindau (VHL) protein") stays.
    out = propagate(text, [first, Mention(71, 88, "colorectal cancer", "Disease")], {"HNPCC": first.text}, repeats=False)
    assert [m.text for m in out] == [first.text, "HNPCC", "HNPCC", "colorectal cancer"]
    gene = "The von Hippel-Lindau (VHL) protein binds; VHL patients."
    spans = [Mention(gene.index("VHL"), gene.index("VHL") + 3, "VHL", "Disease")]
    assert propagate(gene, spans, {"VHL": "von Hippel-Lindau"}, repeats=False) == spans


def test_word_labels_are_bio_over_the_words_a_mention_covers(tmp_path):
    tagger = tiny_tagger(tmp_path / "t")
    doc = Document("1", "breast and ovarian cancer in women", "", [Mention(0, 25, "breast and ovarian cancer", "CompositeMention")])
    tokenized = tokenize(tagger.tokenizer, doc.text)
    assert word_labels(tokenized, doc) == [BEGIN, INSIDE, INSIDE, INSIDE, OUTSIDE, OUTSIDE]


def test_a_saved_tagger_loads_in_plain_transformers_and_in_biosyn(tmp_path):
    from transformers import AutoModelForTokenClassification, pipeline

    tagger = forced(tiny_tagger(tmp_path / "t"), BEGIN)
    tagger.save_pretrained(tmp_path / "saved", card="# card\n")
    plain = AutoModelForTokenClassification.from_pretrained(tmp_path / "saved")
    assert tuple(plain.config.id2label[i] for i in range(3)) == LABELS
    found = pipeline("token-classification", model=str(tmp_path / "saved"))("wilson disease")
    assert found and {f["entity"] for f in found} == {"B-Disease"}
    again = DiseaseTagger.from_pretrained(tmp_path / "saved")
    assert again.options == tagger.options
    text = AWKWARD * 3
    np.testing.assert_allclose(again.word_log_probs([text])[0][1], tagger.word_log_probs([text])[0][1], atol=1e-5)
    assert (tmp_path / "saved" / "README.md").read_text() == "# card\n"


def test_training_learns_a_disease_word(tmp_path):
    tagger = tiny_tagger(tmp_path / "t", propagate=False)
    docs = [Document(str(i), f"the {w} of {v} was zika in {v} {w}", "", []) for i, (w, v) in
            enumerate([("case", "mice"), ("rate", "dogs"), ("sign", "rats"), ("risk", "men")] * 4)]
    docs = [Document(d.pmid, d.title, "", [Mention(d.title.index("zika"), d.title.index("zika") + 4, "zika", "Disease")])
            for d in docs]
    scores = iter([0.5, 0.7, 0.6])
    record = train_tagger(tagger, docs, TaggerTrainingConfig(epochs=3, lr=1e-4, batch_size=4, warmup=0.0),
                          evaluate=lambda t: next(scores), progress=False)
    assert record["best_epoch"] == 2 and record["best_dev"] == 0.7
    record = train_tagger(tagger, docs, TaggerTrainingConfig(epochs=15, lr=3e-3, batch_size=4, warmup=0.0), progress=False)
    assert "best_epoch" not in record
    assert record["epochs"][-1]["loss"] < record["epochs"][0]["loss"] / 3
    [spans] = tagger.tag(["in rats it was zika of dogs"])
    assert [m.text for m in spans] == ["zika"]


def test_lexicon_learns_annotation_ratios_and_adds_only_where_nothing_was_found(tmp_path):
    from biosyn.ner.lexicon import Lexicon

    text = "DM patients had DM. Type 2 diabetes (DM) and cancer; breast cancer was rare, cancer of mice."
    at = [text.index("DM"), text.index("DM."), text.index("DM)"), text.index("breast cancer")]
    doc = Document("1", text, "", [Mention(at[0], at[0] + 2, "DM", "Modifier"), Mention(at[1], at[1] + 2, "DM", "SpecificDisease"),
                                   Mention(at[2], at[2] + 2, "DM", "SpecificDisease"),
                                   Mention(at[3], at[3] + 13, "breast cancer", "SpecificDisease")])
    lexicon = Lexicon.learn([doc])
    # "cancer" inside "breast cancer" does not count; it stands alone twice, annotated never.
    assert lexicon.ratios == {"DM": [3, 3], "breast cancer": [1, 1]}
    found = lexicon.find("Breast Cancer and DM, dm and BREAST CANCER in DMD", [(0, 6)], "Disease")
    assert [(m.start, m.end, m.text) for m in found] == [(18, 20, "DM"), (29, 42, "BREAST CANCER")]
    lexicon.save(tmp_path)
    assert Lexicon.load(tmp_path).ratios == lexicon.ratios and Lexicon.load(tmp_path / "none") is None


def test_a_tagger_on_the_first_layers_of_its_base(tmp_path):
    """`biosyn tagger train --layers N`: the base's first N layers, their weights as the base has them."""
    from biosyn.ner.tagger import TaggerOptions

    full = tiny_tagger(tmp_path / "base")  # 2 layers, saved as a transformers folder
    one = DiseaseTagger.from_base(tmp_path / "base", TaggerOptions(max_length=32), layers=1)
    assert one.model.config.num_hidden_layers == 1 and len(one.model.bert.encoder.layer) == 1
    assert torch.equal(one.model.bert.encoder.layer[0].output.dense.weight, full.model.bert.encoder.layer[0].output.dense.weight)
    with pytest.raises(ValueError, match="--layers 3: the base encoder has 2 layers"):
        DiseaseTagger.from_base(tmp_path / "base", TaggerOptions(max_length=32), layers=3)


def test_distillation_loss_is_cross_entropy_or_kl_at_its_ends():
    from biosyn.training.tagger import distillation_loss

    student = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]]])
    teacher = torch.tensor([[[0.0, 3.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 9.0]]])
    labels = torch.tensor([[OUTSIDE, BEGIN, -100]])  # the last token is not labelled: never counted
    gold = torch.nn.functional.cross_entropy(student[0, :2], labels[0, :2])
    assert torch.isclose(distillation_loss(student, teacher, labels, 0.0, 2.0), gold)
    assert torch.isclose(distillation_loss(student, student, labels, 1.0, 2.0), torch.tensor(0.0), atol=1e-6)
    assert distillation_loss(student, teacher, labels, 1.0, 2.0) > 0.1


def test_a_student_learns_its_teachers_tags(tmp_path):
    """Distilled with no weight on the gold labels (which are left empty), a student comes to tag as its teacher."""
    teacher = tiny_tagger(tmp_path / "teacher", propagate=False)
    docs = [Document(str(i), f"the {w} of {v} was zika in {v} {w}", "", [Mention(4 + len(w) + 4 + len(v) + 5, 4 + len(w) + 4 + len(v) + 9, "zika", "Disease")])
            for i, (w, v) in enumerate([("case", "mice"), ("rate", "dogs"), ("sign", "rats"), ("risk", "men")] * 4)]
    train_tagger(teacher, docs, TaggerTrainingConfig(epochs=15, lr=3e-3, batch_size=4, warmup=0.0), progress=False)
    assert [m.text for m in teacher.tag(["in rats it was zika of dogs"])[0]] == ["zika"]
    student = tiny_tagger(tmp_path / "student", seed=1, propagate=False)
    unlabelled = [Document(d.pmid, d.title, "", []) for d in docs]
    record = train_tagger(student, unlabelled, TaggerTrainingConfig(epochs=15, lr=3e-3, batch_size=4, warmup=0.0, distill=1.0),
                          progress=False, teacher=teacher)
    assert record["teacher"] and [m.text for m in student.tag(["in rats it was zika of dogs"])[0]] == ["zika"]
