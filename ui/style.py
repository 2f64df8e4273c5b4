"""The page's look: one theme and a few CSS rules, given to ``launch()`` (Gradio 6)."""

from __future__ import annotations

import gradio as gr

CSS = """
/* min-width: a flex item's default (auto) let one wide table stretch the whole page past a phone's edge */
.gradio-container { max-width: min(1280px, 100vw) !important; min-width: 0 !important; margin: auto; }
/* Plots: the figures' paper is transparent (core/plots.py); in dark mode their text turns light.
   Heat-map cell numbers keep plotly's own contrast with their cell. */
.dark .js-plotly-plot .main-svg g:not(.heatmap-label) > text { fill: var(--body-text-color) !important; }
/* A phone shows all four tab names (Gradio moves the ones that do not fit into a "⋯" menu) */
@media (max-width: 480px) { .tab-container button { padding-left: 8px !important; padding-right: 8px !important; }
                            .gradio-container { padding-left: 8px !important; padding-right: 8px !important; } }
/* Tables: words wrap whole (a narrow column broke "Business" into "Busi ness"), in the page's font */
.gradio-container .header-table, .gradio-container .virtual-row { font-family: var(--font) !important; }
.gradio-container table .wrap { word-break: normal !important; overflow-wrap: break-word !important; }
#header h1 { margin-bottom: 0.1em; }
#header p { color: var(--body-text-color-subdued); margin-top: 0; }
#train-status, #pairs, #embed-info, #model-note { min-height: 2.6em; }
"""
TABLE_CHARS = 90  # a table cell shows this much of a text (a click shows it all), so key columns stay in view
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="orange", neutral_hue="slate")
HEADER = ("# Sentence Lab\nTurn sentences into vectors, see which ones mean the same thing, read their "
          "topic and mood, and train your own model while the curves draw live. "
          "New here? Start with the **Guide** tab.")
