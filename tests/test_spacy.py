"""The spaCy component on a blank English pipeline (no spaCy model download)."""

from importlib.metadata import entry_points

import pytest
import torch

spacy = pytest.importorskip("spacy", reason="spaCy is not installed (pip install biosyn[spacy])")

from biosyn.annotation.annotator import Annotator  # noqa: E402
from biosyn.data.records import Mention  # noqa: E402
from biosyn.interfaces import loading  # noqa: E402
from biosyn.interfaces.spacy_component import make_biosyn  # noqa: E402
from biosyn.model.biosyn import BioSyn  # noqa: E402
from biosyn.preprocess.pipeline import build_dictionary  # noqa: E402
from test_server import tiny_model  # noqa: E402
from tiny import FakeTagger, tiny_tagger, tiny_vocabulary  # noqa: E402


class FixedTagger:
    """Returns the given character spans for every text."""

    def __init__(self, *spans):
        self.spans = spans

    def tag(self, texts):
        return [[Mention(s, e, t[s:e], "Disease") for s, e in self.spans] for t in texts]


def test_add_pipe_from_config_with_a_tagger_folder_and_a_saved_index(tmp_path):
    tagger = tiny_tagger(tmp_path / "tagger")
    with torch.no_grad():  # the head always says B: every word is a mention
        tagger.model.classifier.bias[:] = torch.tensor([0.0, 20.0, 0.0])
    tagger.save_pretrained(tmp_path / "tagger")
    vocabulary = tiny_vocabulary()
    BioSyn().build_index(build_dictionary(vocabulary), vocabulary).save(tmp_path / "idx")

    nlp = spacy.blank("en")
    nlp.add_pipe("biosyn", config={"tagger": str(tmp_path / "tagger"), "model": "sparse", "index": str(tmp_path / "idx")})
    doc = nlp("breast cancer")
    assert [(e.text, e.label_, e.kb_id_, e.start_char, e.end_char) for e in doc.ents] == [
        ("breast", "Disease", "D001943", 0, 6), ("cancer", "Disease", "D009369", 7, 13)]
    breast, cancer = doc.ents
    assert [(cid, name, round(score, 3)) for cid, name, score in breast._.biosyn_concepts] == [("D001943", "Breast Neoplasms", 0.694)]
    assert [(cid, round(score, 3)) for cid, score in breast._.kb_ents] == [("D001943", 0.694)]
    assert [(cid, name) for cid, name, _ in cancer._.biosyn_concepts] == [("D009369", "Neoplasms")]
    assert breast._.biosyn_confidence > 0.99 and cancer._.biosyn_confidence > 0.99  # the head's B, sure


def test_models_load_once_and_only_when_needed(monkeypatch):
    loads = []
    monkeypatch.setattr(loading, "load_tagger", lambda spec=None: loads.append(spec) or FakeTagger())
    monkeypatch.setattr(loading, "load_linker", lambda *a, **kw: tiny_model())
    nlp = spacy.blank("en")
    nlp.add_pipe("biosyn", config={"tagger": "some/tagger"})
    assert loads == []  # building the pipeline loads nothing
    docs = list(nlp.pipe(["Lynch syndrome (HNPCC).", "No disease here.", "breast and ovarian cancer"], batch_size=2))
    assert loads == ["some/tagger"]
    assert [[(e.text, e.kb_id_) for e in d.ents] for d in docs] == [
        [("Lynch syndrome", "D003123"), ("HNPCC", "D003123")], [], [("ovarian cancer", "D010051")]]
    assert nlp("WD").ents[0]._.kb_ents[0][0] == "D006527" and loads == ["some/tagger"]


def test_spans_widen_to_tokens_and_other_entities_stay():
    nlp = spacy.blank("en")
    component = nlp.add_pipe("biosyn")
    text = "nonHNPCC and breast and ovarian cancer in Paris."
    # "HNPCC" sits inside the token "nonHNPCC"; the second span is a composite mention.
    component._annotator = Annotator(FixedTagger((3, 8), (13, 38)), tiny_model())
    doc = nlp.make_doc(text)
    doc.ents = [doc.char_span(42, 47, label="GPE"), doc.char_span(0, 8, label="OTHER")]
    doc = component(doc)
    assert [(e.text, e.label_) for e in doc.ents] == [("nonHNPCC", "Disease"), ("breast and ovarian cancer", "Disease"),
                                                      ("Paris", "GPE")]
    hnpcc, composite, paris = doc.ents
    assert [c[0] for c in hnpcc._.biosyn_concepts] == ["D003123"]
    assert [(cid, name) for cid, name, _ in composite._.biosyn_concepts] == [("D001943", "Breast Neoplasms"),
                                                                              ("D010051", "Ovarian Neoplasms")]
    assert composite.kb_id_ == "D001943" and [c for c, _ in composite._.kb_ents] == ["D001943", "D010051"]
    assert paris._.kb_ents == [] and paris._.biosyn_concepts == []


def test_the_entry_point_names_the_factory():
    (entry,) = [e for e in entry_points(group="spacy_factories") if e.name == "biosyn"]
    assert entry.load() is make_biosyn
