"""biosyn: biomedical entity normalisation with BioSyn (sparse + dense synonym ranking)."""

__version__ = "0.1.0"
