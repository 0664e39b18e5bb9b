import pytest

from biosyn.data.errors import FormatError
from biosyn.preprocess.abbreviations import expand_abbreviations, find_abbreviations, reordered_abbreviations
from biosyn.preprocess.composites import count_concepts, split_composite
from biosyn.preprocess.pipeline import Preprocessor
from biosyn.preprocess.text import (
    apply_spelling_fixes,
    load_spelling_fixes,
    normalize_text,
    remove_punctuation,
)

# --- composites ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mention", "n_ids", "expected"),
    [
        ("breast and ovarian cancer", None, ["breast cancer", "ovarian cancer"]),
        ("breast and ovarian cancer", 2, ["breast cancer", "ovarian cancer"]),
        (
            "colorectal, endometrial, and ovarian cancers",
            3,
            ["colorectal cancers", "endometrial cancers", "ovarian cancers"],
        ),
        ("type I/II collagenopathies", 2, ["type I collagenopathies", "type II collagenopathies"]),
        ("Duchenne/Becker muscular dystrophy", 2, ["Duchenne muscular dystrophy", "Becker muscular dystrophy"]),
        (
            "facial, limb and genital abnormalities",
            3,
            ["facial abnormalities", "limb abnormalities", "genital abnormalities"],
        ),
        ("breast and/or ovarian cancer", 2, ["breast cancer", "ovarian cancer"]),
        ("cancer of the breast and ovaries", 2, ["cancer of breast", "cancer of ovaries"]),
        (
            "disorder of lymphocyte homeostasis and immunological tolerance",
            2,
            ["disorder of lymphocyte homeostasis", "disorder of immunological tolerance"],
        ),
        # words not separated by commas stay together, as in BioSyn
        ("hereditary breast and ovarian cancer", None, ["hereditary breast cancer", "ovarian cancer"]),
        (
            "Duchenne and the milder Becker muscular dystrophies",
            2,
            ["Duchenne Becker muscular dystrophies", "the milder Becker muscular dystrophies"],
        ),
    ],
)
def test_split_composite(mention, n_ids, expected):
    assert split_composite(mention, n_ids) == expected


def test_split_composite_single_id_keeps_mention():
    assert split_composite("  breast and ovarian cancer ", 1) == ["breast and ovarian cancer"]


def test_split_composite_count_mismatch_keeps_mention():
    # three parts, two gold IDs (real NCBI annotation D012175|D018325)
    mention = "retinal, cerebellar and spinal haemangioblastomas"
    assert len(split_composite(mention)) == 3
    assert split_composite(mention, 2) == [mention]


def test_split_composite_token_fallback():
    # no rule matches; as many tokens as IDs
    assert split_composite("HPRT-APRT deficient", 2) == ["HPRT-APRT", "deficient"]
    assert split_composite("HPRT-APRT deficient") == ["HPRT-APRT deficient"]
    assert split_composite("pancreatic cysts and tumors", 2) == ["pancreatic cysts and tumors"]


def test_split_composite_and_or_is_not_a_slash():
    assert split_composite("cleft lip and/or palate", 2) == ["cleft lip and/or palate"]


def test_count_concepts():
    assert count_concepts(("D001943", "D010051")) == 2
    assert count_concepts(("D012175",)) == 1
    assert count_concepts(("610102", "612446")) == 2
    assert count_concepts(("D009369", "114480")) == 1


# --- abbreviations ------------------------------------------------------------

ABBRS = {
    "HNPCC": "hereditary nonpolyposis colorectal cancer",
    "APC": "adenomatous polyposis coli",
    "CRC": "HNPCC-like CRC syndrome",
    "X": "Y",
    "Y": "Z tumour",
}


def test_expand_whole_tokens_only():
    assert expand_abbreviations("HNPCC families", ABBRS) == "hereditary nonpolyposis colorectal cancer families"
    assert expand_abbreviations("HNPCCs", ABBRS) == "HNPCCs"
    assert expand_abbreviations("(HNPCC)", ABBRS) == "(HNPCC)"
    assert expand_abbreviations("hnpcc", ABBRS) == "hnpcc"


def test_expand_repeats_until_stable():
    assert expand_abbreviations("X", ABBRS) == "Z tumour"


def test_expand_slash_halves_and_trailing_comma():
    assert (
        expand_abbreviations("HNPCC/APC", ABBRS)
        == "hereditary nonpolyposis colorectal cancer/adenomatous polyposis coli"
    )
    assert expand_abbreviations("APC, HNPCC/X,", ABBRS) == (
        "adenomatous polyposis coli, hereditary nonpolyposis colorectal cancer/Z tumour,"
    )


def test_expand_collapses_whitespace():
    assert expand_abbreviations("  no   abbreviation ", ABBRS) == "no abbreviation"


def test_expand_cycles_and_growth_terminate():
    assert expand_abbreviations("A", {"A": "B", "B": "A"}) == "B"
    assert expand_abbreviations("AD", {"AD": "AD disease"}) == "AD disease"
    # a token whose expansion still contains a short form of another key (CRC) stops too
    assert expand_abbreviations("CRC", ABBRS) == "HNPCC-like CRC syndrome"


def test_find_abbreviations_with_ab3p():
    text = (
        "Germline mutations in mismatch repair genes cause hereditary nonpolyposis "
        "colorectal cancer (HNPCC). HNPCC accounts for a few percent of cases."
    )
    abbrs = find_abbreviations(text)
    assert abbrs == {"HNPCC": "hereditary nonpolyposis colorectal cancer"}
    assert find_abbreviations("No abbreviations here.") == {}
    assert expand_abbreviations("HNPCC", abbrs) == "hereditary nonpolyposis colorectal cancer"



def test_short_forms_that_reorder_their_long_forms_initials_are_found_for_new_text():
    text = "Myotonic dystrophy (DM) is caused by a CTG expansion in the DM gene (DMPK). Wilson disease (WD) and (x2)."
    assert find_abbreviations(text).get("DM") is None  # Ab3P wants the letters in order
    assert reordered_abbreviations(text, {}) == {"DM": "Myotonic dystrophy", "WD": "Wilson disease"}
    assert reordered_abbreviations(text, {"WD": "Wilson's disease"}) == {"DM": "Myotonic dystrophy"}  # Ab3P's pairs win
    assert reordered_abbreviations("a rare form (ABC) and the (Dm)", {}) == {}  # initials differ; no capital pair
    preprocessor = Preprocessor()
    assert preprocessor.text_abbreviations(text)["DM"] == "Myotonic dystrophy"
    assert "DM" not in preprocessor.abbreviations_in(text)  # BioSyn's protocol: Ab3P alone


# --- text ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ataxia-telangiectasia (A-T)", "ataxia telangiectasia a t"),
        ("  Breast/Ovarian   CANCER, ", "breast ovarian cancer"),
        ("G6PD-deficiency's  [type 2]", "g6pd deficiency s type 2"),
        ("C6|C7 deficiency", "c6 c7 deficiency"),
        ("café-au-lait spots", "café au lait spots"),
        ("...", ""),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_remove_punctuation_keeps_case():
    assert remove_punctuation("Ataxia-telangiectasia (A-T)") == "Ataxia telangiectasia A T"


FIXES = {"tumours": "tumors", "le": "leg", "smallbowel": "small bowel"}


def test_apply_spelling_fixes_whole_tokens():
    assert apply_spelling_fixes("tumours of the le", FIXES) == "tumors of the leg"
    assert apply_spelling_fixes("left smallbowel", FIXES) == "left small bowel"
    # case-sensitive and token-based: BioSyn fixes after lowercasing, before punctuation removal
    assert apply_spelling_fixes("Tumours tumours,", FIXES) == "Tumours tumours,"


def test_normalize_text_applies_fixes_after_lowercasing():
    assert normalize_text("Benign TUMOURS of the  LE", FIXES) == "benign tumors of the leg"
    assert normalize_text("tumours, (le)", FIXES) == "tumours le"


def test_load_spelling_fixes(tmp_path):
    path = tmp_path / "spell.txt"
    path.write_text("tumours||tumors\n\nsmallbowel||small bowel\ntumours||tumor\n", encoding="utf-8")
    assert load_spelling_fixes(path) == {"tumours": "tumor", "smallbowel": "small bowel"}


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("tumours tumors", "line"),
        ("a||b||c", "line"),
        ("||tumors", "typo"),
        ("two words||x", "typo"),
        ("tumours||", "fix"),
    ],
)
def test_load_spelling_fixes_malformed(tmp_path, line, field):
    path = tmp_path / "spell.txt"
    path.write_text(f"abcess||abscess\n{line}\n", encoding="utf-8")
    with pytest.raises(FormatError) as excinfo:
        load_spelling_fixes(path)
    assert excinfo.value.line == 2
    assert excinfo.value.field == field
    assert str(excinfo.value).startswith(f"{path}:2: {field}: ")
