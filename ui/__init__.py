"""The web app's rooms: one module per tab (layout and handlers together), the per-visitor
session and the host's limits (``state``), page values turned into checked core values
(``inputs``), and the Guide's text. Gradio lives only here and in ``app.py``; ``core`` never
imports it.
"""
