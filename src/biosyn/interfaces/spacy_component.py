"""A spaCy pipeline component (`pip install biosyn[spacy]`): disease mentions with concept IDs.

    import spacy
    nlp = spacy.blank("en")
    nlp.add_pipe("biosyn", config={"tagger": "runs/ncbi-disease/tagger", "model": "sparse"})
    doc = nlp("Lynch syndrome (HNPCC) raises colorectal cancer risk.")
    [(e.text, e.label_, e.kb_id_, e._.kb_ents) for e in doc.ents]

The factory is registered when this module is imported and through the `spacy_factories` entry
point, so `add_pipe("biosyn")` works without the import once biosyn is installed. It sets
`doc.ents` (label "Disease"; entities of other components that do not overlap are kept) with
`kb_id_` the best concept, and two span extensions: `span._.kb_ents`, (concept ID, score) pairs
as scispaCy's linker gives them, and `span._.biosyn_concepts`, (concept ID, preferred name, score)
triples. A composite mention ("breast and ovarian cancer") has one pair or triple per part.
`span._.biosyn_confidence` is the tagger's confidence in a span it found (None for given spans);
such a span may have no concept (`kb_id_` empty) when it links weakly but the tagger is sure of it.
The tagger's character spans are widened to whole spaCy tokens (`alignment_mode="expand"`).
Models load once, at the first document, not when the pipeline is built.
"""


from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import filter_spans, minibatch

from ..model.presets import SURE_SPAN_CONFIDENCE

for _name in ("kb_ents", "biosyn_concepts"):
    if not Span.has_extension(_name):  # scispaCy registers kb_ents too
        Span.set_extension(_name, default=[])
if not Span.has_extension("biosyn_confidence"):
    Span.set_extension("biosyn_confidence", default=None)


@Language.factory("biosyn", default_config={
    "tagger": None, "model": None, "index": None, "vocabulary": "medic-2012", "add_mentions": None, "data_dir": None,
    "mode": None, "min_score": None, "min_confidence": SURE_SPAN_CONFIDENCE, "label": "Disease", "batch_size": 16,
})
def make_biosyn(nlp: Language, name: str, tagger: str | None, model: str | None, index: str | None,
                vocabulary: str, add_mentions: str | None, data_dir: str | None, mode: str | None,
                min_score: float | None, min_confidence: float | None, label: str, batch_size: int) -> "BiosynComponent":
    """`tagger`, `model`, `index`, `vocabulary`, `add_mentions`, `data_dir`, `mode`, `min_score`, `min_confidence`
    as in `biosyn annotate` (null: the same defaults, except a null min_confidence: never)."""
    return BiosynComponent(name, tagger=tagger, model=model, index=index, vocabulary=vocabulary, add_mentions=add_mentions,
                           data_dir=data_dir, mode=mode, min_score=min_score, min_confidence=min_confidence, label=label,
                           batch_size=batch_size)


class BiosynComponent:
    def __init__(self, name: str = "biosyn", *, tagger=None, model=None, index=None, vocabulary="medic-2012",
                 add_mentions=None, data_dir=None, mode=None, min_score=None, min_confidence=SURE_SPAN_CONFIDENCE,
                 label="Disease", batch_size=16, annotator=None):
        self.name, self.label, self.batch_size = name, label, batch_size
        self._load = dict(tagger=tagger, model=model, index=index, vocabulary=vocabulary, add_mentions=add_mentions,
                          data_dir=data_dir, mode=mode, min_score=min_score, min_confidence=min_confidence)
        self._annotator = annotator  # an Annotator to use instead of loading one

    @property
    def annotator(self):
        if self._annotator is None:
            from ..annotation.annotator import Annotator
            from .loading import default_min_score, load_linker, load_tagger

            c = self._load
            linker = load_linker(c["model"], index=c["index"], vocabulary=c["vocabulary"], add_mentions=c["add_mentions"],
                                 data_dir=c["data_dir"])
            self._annotator = Annotator(load_tagger(c["tagger"]), linker, mode=c["mode"],
                                        min_score=default_min_score(linker, c["min_score"], c["mode"]),
                                        min_confidence=c["min_confidence"])
        return self._annotator

    def __call__(self, doc: Doc) -> Doc:
        return self._set(doc, self.annotator.annotate([doc.text])[0])

    def pipe(self, docs, batch_size: int | None = None):
        for batch in minibatch(docs, size=batch_size or self.batch_size):
            for doc, mentions in zip(batch, self.annotator.annotate([d.text for d in batch])):
                yield self._set(doc, mentions)

    def _set(self, doc: Doc, mentions) -> Doc:
        spans = []
        concepts: dict[tuple[int, int], list[tuple[str, str, float]]] = {}
        confidence: dict[tuple[int, int], float | None] = {}
        for m in mentions:
            span = doc.char_span(m.start, m.end, label=self.label, kb_id=m.ids[0] if m.ids else "", alignment_mode="expand")
            if span is None:  # nothing but whitespace
                continue
            spans.append(span)
            concepts.setdefault((span.start, span.end), [(c.concept_id, c.preferred_name, c.score) for c in m.normalization.top])
            confidence.setdefault((span.start, span.end), m.confidence)
        ours = filter_spans(spans)  # two mentions widened onto the same tokens: the longer stays
        taken = {i for s in ours for i in range(s.start, s.end)}
        others = [e for e in doc.ents if taken.isdisjoint(range(e.start, e.end))]
        doc.ents = sorted(ours + others, key=lambda s: s.start)
        for ent in doc.ents:
            if (ent.start, ent.end) in concepts and ent.label_ == self.label:
                ent._.biosyn_concepts = concepts[ent.start, ent.end]
                ent._.kb_ents = [(cid, score) for cid, _, score in ent._.biosyn_concepts]
                ent._.biosyn_confidence = confidence[ent.start, ent.end]
        return doc
