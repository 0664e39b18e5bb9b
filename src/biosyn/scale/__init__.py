"""Work bigger than one process, on Ray: corpus-scale batch annotation and index building in parts.

Ray is the optional extra `biosyn[scale]`; nothing below this package imports it.
"""
