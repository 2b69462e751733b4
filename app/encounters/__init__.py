"""Encounter domain: the source-neutral notice every feed decodes to, and the state folded from them."""
