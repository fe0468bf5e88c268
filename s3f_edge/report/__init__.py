"""Self-contained HTML review pages of s3f-edge's results (Jinja2 templates, images embedded).

It stands on ``s3f_edge.data`` (decoding images) and ``s3f_edge.results`` (reading results files); Jinja2 loads
only when a page is written.
"""
