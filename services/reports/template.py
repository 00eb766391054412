# ruff: noqa: E501  (HTML lines as they read best)
"""The sweep report's HTML (a Jinja2 template, autoescaped): CSS inline, images as data:
URIs, no script, nothing fetched from anywhere."""

from __future__ import annotations

REPORT_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sweeplab report: {{ title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.meta { color: #555; }
.status-diverged { color: #b00; } .status-pruned, .status-skipped { color: #777; }
.bar { display: inline-block; height: 0.8em; background: #4c78a8; vertical-align: middle; }
.note { color: #555; font-style: italic; }
code { font-size: 0.95em; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="meta">sweep <code>{{ sweep.id }}</code> &middot; experiment {{ sweep.experiment }}
&middot; {{ sweep.method }} &middot; {{ sweep.status }} &middot;
objective: {{ sweep.objective_goal }} <code>{{ sweep.objective_metric }}</code> &middot;
{{ n_trials }} trial(s) of {{ sweep.n_trials }}
{%- for status, n in counts %} &middot; {{ n }} {{ status }}{% endfor %}</p>
<p class="meta">created {{ created }}{% if finished %}, finished {{ finished }}{% endif %};
swept: {% for p in swept %}<code>{{ p }}</code>{% if not loop.last %}, {% endif %}{% endfor %}</p>

<h2 id="leaderboard">Leaderboard (top {{ top }})</h2>
{% if board %}
<table class="leaderboard">
<thead><tr><th>rank</th><th>trial</th><th>status</th><th>{{ sweep.objective_metric }}</th>
<th>best epoch</th><th>epochs</th>{% for p in swept %}<th>{{ p }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in board %}<tr class="trial">
<td class="num">{{ row.rank if row.rank is not none else "" }}</td>
<td class="num">{{ row.trial_index }}</td>
<td class="status-{{ row.status }}">{{ row.status }}</td>
<td class="num">{{ row.objective }}</td>
<td class="num">{{ row.best_epoch if row.best_epoch is not none else "" }}</td>
<td class="num">{{ row.epochs_done }}</td>
{% for value in row.cells %}<td>{{ value }}</td>{% endfor %}
</tr>
{% endfor %}</tbody>
</table>
{% else %}<p class="note">No trial yet.</p>{% endif %}

<h2 id="lr-map">Learning-rate map</h2>
{% if lr_map_png %}
<img id="lr-map-img" alt="objective against the learning rate" src="data:image/png;base64,{{ lr_map_png }}">
{% if ceilings %}<p>Divergence ceiling{{ "s" if ceilings|length > 1 else "" }}:
{% for c in ceilings %}{{ c.combination or "every combination" }}: lr &ge; {{ "%g"|format(c.learning_rate) }}
({{ "the sweep skips the trials at or above it" if c.source == "sweep" else "the smallest rate that diverged; the sweep skips nothing" }}){% if not loop.last %}; {% endif %}{% endfor %}</p>{% endif %}
{% else %}<p class="note">{{ lr_map_note }}</p>{% endif %}

<h2 id="best">Best trial</h2>
{% if best %}
<p>Trial {{ best.trial_index }} (<code>{{ best.id }}</code>), {{ best.status }}:
{{ sweep.objective_metric }} = {{ best.objective }} at epoch {{ best.best_epoch }};
{% for k, v in best.params %}<code>{{ k }}</code> = {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}</p>
{% if curves_png %}<img id="curves-img" alt="the best trial's learning curves" src="data:image/png;base64,{{ curves_png }}">
<img id="layers-img" alt="the best trial's per-layer numbers" src="data:image/png;base64,{{ layers_png }}">
{% else %}<p class="note">The best trial recorded no epoch.</p>{% endif %}
<h3>Its diagnosis</h3>
{% if best.diagnosis %}<table class="diagnosis"><thead><tr><th>finding</th><th>message</th>
<th>suggestion</th><th>evidence</th></tr></thead><tbody>
{% for d in best.diagnosis %}<tr><td><code>{{ d.code }}</code></td><td>{{ d.message }}</td>
<td>{{ d.suggestion }}</td><td><code>{{ d.evidence }}</code></td></tr>{% endfor %}
</tbody></table>
{% else %}<p>No finding: the run looks healthy.</p>{% endif %}
{% else %}<p class="note">No trial has an objective value yet.</p>{% endif %}

<h2 id="diagnoses">Diagnosis across trials</h2>
{% if findings %}<table class="findings"><thead><tr><th>finding</th><th>trials</th></tr></thead><tbody>
{% for code, n in findings %}<tr><td><code>{{ code }}</code></td><td class="num">{{ n }}</td></tr>{% endfor %}
</tbody></table>{% endif %}
<p>{{ healthy }} of {{ diagnosed }} trial(s) that ended have no finding.</p>

<h2 id="importance">Parameter importance</h2>
{% if importance.values %}
<p>Optuna's fANOVA evaluator over {{ importance.n_trials }} finished trials (shares of the
objective's variance).</p>
<table class="importance"><thead><tr><th>parameter</th><th>importance</th><th></th></tr></thead><tbody>
{% for name, value in importance.values.items() %}<tr><td><code>{{ name }}</code></td>
<td class="num">{{ "%.3f"|format(value) }}</td>
<td><span class="bar" style="width: {{ (value * 300)|round|int }}px"></span></td></tr>{% endfor %}
</tbody></table>
{% else %}<p class="note">No parameter importance: {{ importance.reason }}.</p>{% endif %}

<p class="meta">Made by sweeplab at {{ now }} in {{ build_ms }} ms.</p>
</body>
</html>
"""
