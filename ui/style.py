"""The page's look: one theme and a few CSS rules, given to ``launch()`` (Gradio 6)."""

from __future__ import annotations

import gradio as gr

CSS = """
.gradio-container { max-width: 1280px !important; margin: auto; }
#header h1 { margin-bottom: 0.1em; }
#header p { color: var(--body-text-color-subdued); margin-top: 0; }
#train-status, #pairs, #embed-info, #model-note { min-height: 2.6em; }
"""
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="orange", neutral_hue="slate")
HEADER = ("# Sentence Lab\nTurn sentences into vectors, see which ones mean the same thing, read their "
          "topic and mood, and train your own model while the curves draw live. "
          "New here? Start with the **Guide** tab.")
