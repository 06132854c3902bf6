"""ActivityPub at the edge: vocabulary, JSON-LD, HTTP signatures, discovery, inbox and delivery.

Raw JSON stops here; the domain in node/ sees typed values only.
"""
