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
/* The Guide's tables scroll sideways on a phone instead of breaking words mid-word */
#guide table { display: block; overflow-x: auto; }
#guide td, #guide th { word-break: normal; overflow-wrap: normal; min-width: 6em; }
.meta-text[data-said] { font-size: 0 !important; }
.meta-text[data-said]::after { content: attr(data-said); font-size: var(--text-sm); }
#header h1 { margin-bottom: 0.1em; }
#header p { color: var(--body-text-color-subdued); margin-top: 0; }
#train-status, #pairs, #embed-info, #model-note { min-height: 2.6em; }
"""
# Gradio's own progress line reads "queue: 2/3 | 4.1/43.1s". A small script says it in words
# ("You are 2nd in line, about 39 s") as a data attribute that CSS shows in its place, so the
# element Gradio updates is never touched.
HEAD = """<script>
(() => {
  const nth = n => n + ((n % 100 > 10 && n % 100 < 14) ? "th" : ({1: "st", 2: "nd", 3: "rd"}[n % 10] || "th"));
  const words = text => {
    const t = text.replace(/\\s+/g, " ").trim();
    let m = t.match(/queue: (\\d+)\\/\\d* \\|\\s*([\\d.]+)(?:\\/([\\d.]+))?s/);
    if (m) {
      const left = m[3] ? Math.max(1, Math.round(+m[3] - +m[2])) : null;
      return (+m[1] === 1 ? "You are next in line" : `You are ${nth(+m[1])} in line`) + (left ? `, about ${left} s` : "");
    }
    m = t.match(/processing \\|\\s*([\\d.]+)(?:\\/([\\d.]+))?s/);
    if (m) return `Working… ${Math.round(+m[1])} s` + (m[2] ? ` of about ${Math.round(+m[2])} s` : "");
    return null;
  };
  window.sentenceLabQueueWords = words;  // the browser test reads Gradio's line through it
  const sweep = () => document.querySelectorAll(".meta-text").forEach(el => {
    const said = words(el.textContent);
    if (said === null) delete el.dataset.said; else if (el.dataset.said !== said) el.dataset.said = said;
  });
  let queued = false;
  new MutationObserver(() => { if (!queued) { queued = true; requestAnimationFrame(() => { queued = false; sweep(); }); } })
    .observe(document.documentElement, {subtree: true, childList: true, characterData: true});
})();
</script>"""
REFUSED = "Nothing to show: the last input was refused (the message says why)."
TABLE_CHARS = 90  # a table cell shows this much of a text (a click shows it all), so key columns stay in view
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="orange", neutral_hue="slate")
HEADER = ("# Sentence Lab\nTurn sentences into vectors, see which ones mean the same thing, read their "
          "topic and mood, and train your own model while the curves draw live. "
          "New here? Start with the **Guide** tab.")
