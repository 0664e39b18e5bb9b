"""Disease mention recognition: a transformers token-classification tagger over raw text.

Beside `biosyn.model` (which links mentions to concepts); `biosyn.annotate` joins the two.
"""
