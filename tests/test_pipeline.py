from biosyn.data.records import Concept, Document, Mention, Query, Vocabulary
from biosyn.preprocess.pipeline import Preprocessor, build_dictionary, split_known

VOCAB = Vocabulary([
    Concept("D001943", "Breast Neoplasms", ("114480",), ("Breast Cancer",)),
    Concept("D010051", "Ovarian Neoplasms", (), ("Ovarian Cancer",)),
    Concept("C1", "Cancer", (), ()),
    Concept("C2", "cancer", (), ("Tumour",)),
])


def test_vocabulary_names_are_lowercased_and_shared_names_keep_all_ids():
    d = build_dictionary(VOCAB)
    assert dict(zip(d.names, d.ids)) == {
        "breast neoplasms": ("D001943", "114480"), "breast cancer": ("D001943", "114480"),
        "ovarian neoplasms": ("D010051",), "ovarian cancer": ("D010051",),
        "cancer": ("C1", "C2"), "tumour": ("C2",),
    }


def test_queries_from_a_document():
    text_title = "Hereditary nonpolyposis colorectal cancer (HNPCC) and breast and ovarian cancer."
    doc = Document("1", text_title, "HNPCC is common.", [
        Mention(43, 48, "HNPCC", "SpecificDisease", ("D003123",)),
        Mention(54, 79, "breast and ovarian cancer", "CompositeMention", ("D001943", "D010051")),
        Mention(0, 5, "tumor", "Modifier", ()),
    ])
    pre = Preprocessor(spelling_fixes={"tumor": "tumour"})
    hnpcc, composite, tumour = pre.queries([doc, doc])  # the repeated PMID is skipped
    assert hnpcc.parts == ("hereditary nonpolyposis colorectal cancer",)
    assert composite.parts == ("breast cancer", "ovarian cancer") and composite.gold == ("D001943", "D010051")
    assert tumour.parts == ("tumour",)
    plain = Preprocessor(resolve_abbreviations=False, split_composites=False)
    assert [q.parts for q in plain.queries([doc])][:2] == [("hnpcc",), ("breast and ovarian cancer",)]


def test_training_mentions_join_the_dictionary_as_biosyn_adds_them():
    extra = [Query("breast and ovarian cancers", ("breast cancers", "ovarian cancers"), ("D010051", "D001943")),
             Query("tumours", ("tumours",), ("C2", "C1"))]
    d = {e.name: e.ids for e in build_dictionary(VOCAB, extra=extra)}
    assert d["breast cancers ovarian cancers"] == ("D010051", "D001943")
    assert "breast cancers" not in d
    assert d["tumours"] == ("C2", "C1")


def test_split_known():
    queries = [Query("a", ("a",), ("114480",)), Query("b", ("b",), ("D404",)), Query("c", ("c",), ())]
    known, unknown = split_known(queries, VOCAB)
    assert [q.text for q in known] == ["a"] and [q.text for q in unknown] == ["b", "c"]
