"""Text to concepts: the tagger and the linker joined (`Annotator`)."""
