"""report.html of a search: one page that says what the search found and how much of it is noise.

Why: a finished search leaves a dozen files (``search.json``, ``trials.jsonl``, ``final.json``,
four plots, model folders) and a closing JSON on stdout; what its user wants first is three
answers — did anything beat ``train``'s default by more than noise, what is faster at what cost,
and how wide the noise is — with the evidence under them. This page gives those answers at the
top, then the retrained candidates with their search-time and retrained scores side by side
(the selection bias), the Pareto front with the folder of each model, the best trials, the plots
and what the search cost. It is self-contained (:mod:`defectnas.html_page`: inline style, plots
as base64 PNG, no script) and every number taken from a file carries ``data-key`` with its path:
``search.<key>`` in search.json, ``final.<key>`` in final.json, ``trials.<i>.<key>`` in the
i-th trial of trials.jsonl in trial order.

It is rewritten whenever the search ends (a resumed, finished search too), from what the files
hold, so it never says more than they do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..html_page import END, escape, fmt, head, num, png_img
from ..storage import atomic_write_text
from .space import Space

REPORT_FILE = "report.html"
TOP_TRIALS = 10  # trials listed on the page (all are in trials.jsonl)
PLOTS = (("final.png", "What the search delivers: retrained models and the distilled one, test AP against served ms"),
         ("pareto.png", "Every trained child: search-time metric against served ms; the non-dominated ones joined; the default starred"),
         ("rewards.png", "Reward per trial and per step with its moving average (the paper's Figure 5); the band: the default ± the noise floor"),
         ("noise.png", "Each architecture's metric ± its seed spread against the default's ± the noise floor"))


def write_search_report(out: Path, search: dict[str, Any], trials: list[dict[str, Any]], final: dict[str, Any] | None,
                        space: Space, seconds: float) -> Path:
    """Write ``out/report.html``.

    ``search``: search.json's dict (settings and ``noise_floor``); ``trials``: trials.jsonl's
    records in trial order; ``final``: final.json's dict, or None when nothing was retrained
    (``--top-k 0 --pareto-max 0``); ``seconds``: the whole search's wall time (earlier runs of a
    resumed one included). Returns the page's path."""
    doc = {"search": search, "final": final or {}, "trials": trials}
    parts = [_head(doc, seconds), _answers(doc, space), _candidates(doc, space), _front(doc, space), _top_trials(doc, space),
             _plots(out), _cost(doc, seconds), FILES, END]
    path = out / REPORT_FILE
    atomic_write_text(path, "\n".join(p for p in parts if p))
    return path


def _head(doc: dict, seconds: float) -> str:
    s = doc["search"]
    data = Path(str(s.get("data", ""))).name or "data"
    strategy = {"rl": "REINFORCE (LSTM controller)", "random": "random search", "evolution": "regularized evolution"}.get(s["strategy"], s["strategy"])
    note = (f"{escape(data)} · space {num(doc, 'search.space', 0)} · {escape(strategy)} · {fmt(len(doc['trials']))} trials · "
            f"reward {num(doc, 'search.reward_metric', 0)} on the validation split, the mean over "
            f"{num(doc, 'search.child_seeds', 0)} child seeds · children train on {num(doc, 'search.child_rows', 0)} pairs "
            f"× {num(doc, 'search.child_epochs', 0)} epoch(s) · seed {num(doc, 'search.seed', 0)} · {seconds / 60:.1f} minutes in all")
    return head(f"defectnas search: {data}", f"Architecture search: {data}", note)


def _answers(doc: dict, space: Space) -> str:
    final, floor = doc["final"], doc["search"].get("noise_floor") or {}
    metric = doc["search"].get("reward_metric", "ap")
    cards = [_card(f"More accurate than {space.reference}?", *_accuracy_answer(doc, space)),
             _card("Faster at the same accuracy?", *_speed_answer(doc, space.reference)),
             _card("How wide is the noise?", *_noise_answer(doc, floor, metric, space.reference))]
    return "<h2>What the search found</h2><div class=\"cards\">" + "".join(cards) + "</div>" + (
        "" if final else "<p>Nothing was retrained (--top-k 0 --pareto-max 0): the trials below carry search-time rewards only, "
                         "which the selection among them inflates.</p>")


def _card(title: str, big: str, text: str) -> str:
    return f'<div class="card"><div>{escape(title)}</div><div class="big">{big}</div><div class="note">{text}</div></div>'


def _accuracy_answer(doc: dict, space: Space) -> tuple[str, str]:
    final = doc["final"]
    if not final:
        return "–", "no candidate was retrained"
    rows = final["candidates"]
    best_i = next(i for i, r in enumerate(rows) if r.get("best"))
    best = rows[best_i]
    paired = final.get("paired_test")
    if "default" in best["roles"]:
        text = (f"no searched architecture scored above {escape(space.reference)} on validation when retrained "
                f"({num(doc, f'final.candidates.{best_i}.valid_metric')}, the mean of its retrain seeds): best/ is {escape(space.reference)}")
        if final.get("searched_vs_default"):
            text += (f". The most accurate searched architecture against it on the test split: AP "
                     f"{num(doc, 'final.searched_vs_default.diff', signed=True)}, 95% interval "
                     f"[{num(doc, 'final.searched_vs_default.ci_low', signed=True)}, {num(doc, 'final.searched_vs_default.ci_high', signed=True)}] "
                     f"over {num(doc, 'final.searched_vs_default.queries', 0)} queries: {num(doc, 'final.searched_vs_default.verdict', 0)}"
                     f"{escape(final['searched_vs_default'].get('caveat', ''))}")
        return "no", text
    if not paired:
        return "–", (f"best/ ({escape(space.describe(best['architecture']))}) was chosen on validation "
                     f"({num(doc, f'final.candidates.{best_i}.valid_metric')}); without a test split there is no paired test")
    big = {"better by more than noise": "yes", "worse by more than noise": "no, worse"}.get(paired["verdict"], "no")
    return big, (f"best/ ({escape(space.describe(best['architecture']))}) against {escape(space.reference)} on the test split: AP "
                 f"{num(doc, 'final.paired_test.diff', signed=True)}, 95% interval [{num(doc, 'final.paired_test.ci_low', signed=True)}, "
                 f"{num(doc, 'final.paired_test.ci_high', signed=True)}] over {num(doc, 'final.paired_test.queries', 0)} queries "
                 f"(paired bootstrap): {num(doc, 'final.paired_test.verdict', 0)}{escape(paired.get('caveat', ''))}")


def _speed_answer(doc: dict, ref: str) -> tuple[str, str]:
    final = doc["final"]
    distilled = final.get("distilled") if final else None
    if distilled and "key" in distilled:
        i = next(i for i, r in enumerate(final["candidates"]) if r["key"] == distilled["key"])
        speed = final["candidates"][i].get("speedup_over_default")
        text = (f"distilled/ (best/'s query tower distilled into {num(doc, 'final.distilled.query_layers', 0)} layers; same product cache) "
                f"serves in {num(doc, 'final.distilled.latency_ms', 2)} ms a request"
                + (f", {num(doc, f'final.candidates.{i}.speedup_over_default', 2)}× the speed of {escape(ref)}" if speed else ""))
        vs = distilled.get("vs_default")
        if vs:
            text += (f"; test AP against {escape(ref)} {num(doc, 'final.distilled.vs_default.diff', signed=True)}, 95% interval "
                     f"[{num(doc, 'final.distilled.vs_default.ci_low', signed=True)}, {num(doc, 'final.distilled.vs_default.ci_high', signed=True)}]: "
                     f"{num(doc, 'final.distilled.vs_default.verdict', 0)}")
        worse = (vs or {}).get("verdict") == "worse by more than noise"
        return (f"{speed:.2f}×" + (", less accurate" if worse else "") if speed else "–"), text
    front = (final or {}).get("pareto") or []
    fastest = min(range(len(front)), key=lambda i: front[i]["latency_ms"], default=None)
    if fastest is None or front[fastest].get("speedup_over_default") is None:
        return "–", (escape(distilled.get("skipped", "")) if distilled else f"no front model was timed beside {escape(ref)}")
    return (f"{front[fastest]['speedup_over_default']:.2f}×",
            f"the fastest front model, pareto/{front[fastest]['n']}, serves in {num(doc, f'final.pareto.{fastest}.latency_ms', 2)} ms "
            f"a request at test AP {num(doc, f'final.pareto.{fastest}.test_ap')} (see the front below for the default's)")


def _noise_answer(doc: dict, floor: dict, metric: str, ref: str) -> tuple[str, str]:
    if not floor or floor.get("std_of_mean") is None:
        return "–", "not measured (--noise-repeats below 2): differences between rewards cannot be told from seed noise here"
    band = floor["mean"] + 2 * floor["std_of_mean"]
    measured = [t for t in doc["trials"] if not t.get("cached")]
    above = sum(t["metric"] > band for t in measured)
    return (f"± {floor['std_of_mean']:.4f}",
            f"{escape(ref)} under {num(doc, 'search.noise_floor.repeats', 0)} sets of {num(doc, 'search.noise_floor.child_seeds', 0)} "
            f"seeds scored {metric} {num(doc, 'search.noise_floor.mean')} with a std of {num(doc, 'search.noise_floor.std_of_mean')} "
            f"between sets (one seed: {num(doc, 'search.noise_floor.seed_std')}); {above} of {len(measured)} children scored above "
            f"its mean + 2 std ({band:.4f}). The best of many noisy rewards is inflated by the selection itself: the table below "
            "shows each candidate's search-time and retrained gain over the default side by side.")


def _candidates(doc: dict, space: Space) -> str:
    final = doc["final"]
    if not final:
        return ""
    metric = final.get("reward_metric", "ap")
    body = []
    for i, r in enumerate(final["candidates"]):
        k = f"final.candidates.{i}"
        search = (f"{num(doc, f'{k}.search_metric')} ± {num(doc, f'{k}.search_spread')}" if r.get("search_metric") is not None else "–")
        test = _maybe(doc, r, k, "test_ap") + (f" ± {num(doc, f'{k}.test_ap_std')}" if r.get("test_ap_std") is not None else "")
        body.append(
            f"<tr><td class=\"t\">{escape(', '.join(r['roles']))}{' <b>(best/)</b>' if r.get('best') else ''}</td>"
            f"<td class=\"t\">{escape(space.describe(r['architecture']))}</td><td>{search}</td>"
            f"<td>{num(doc, f'{k}.valid_metric')}" + (f" ± {num(doc, f'{k}.valid_metric_std')}" if r.get("valid_metric_std") else "") + "</td>"
            f"<td>{_maybe(doc, r, k, 'search_gain_over_default')}</td><td>{_maybe(doc, r, k, 'retrained_gain_over_default')}</td>"
            f"<td>{_maybe(doc, r, k, 'selection_bias')}</td><td>{test}</td><td>{_maybe(doc, r, k, 'test_f1')}</td>"
            f"<td>{num(doc, f'{k}.latency_ms', 2)}</td><td>{_maybe(doc, r, k, 'speedup_over_default', 2)}</td>"
            f"<td>{_maybe(doc, r, k, 'params', 0)}</td><td>{_maybe(doc, r, k, 'seconds', 0)}</td></tr>")
    retrain = final.get("retrain") or {}
    return (f"<h2>Retrained candidates</h2><p>Each trained again from scratch under {fmt(retrain.get('seeds'))} fresh seeds "
            f"({escape(', '.join(map(str, final.get('final_seeds', []))))}) on "
            f"{fmt(retrain.get('train_rows'))} training pairs × {fmt(retrain.get('epochs'))} epoch(s); "
            f"validation {escape(metric)} is the mean over those seeds (best/ is chosen on it, never on test). "
            "Selection bias = the gain over the default at search time less the gain after retraining. Served ms: every saved "
            f"model timed side by side in {num(doc, 'final.latency.rounds', 0)} interleaved rounds (median), 1 query × 100 cached products.</p>"
            "<table><tr><th class=\"t\">role</th><th class=\"t\">architecture</th><th>search " + escape(metric) + " ± seeds</th>"
            "<th>retrained valid " + escape(metric) + " ± seeds</th><th>gain at search</th><th>gain retrained</th><th>selection bias</th>"
            "<th>test AP ± seeds</th><th>test F1</th><th>served ms</th><th>× default speed</th><th>parameters (trainable)</th>"
            "<th>retrain s</th></tr>" + "".join(body) + "</table>")


SIGNED = {"search_gain_over_default", "retrained_gain_over_default", "selection_bias"}  # differences: shown with their sign


def _maybe(doc: dict, row: dict, k: str, field: str, digits: int = 4) -> str:
    """The row's ``field`` (tagged with ``k.field``), or "–" when the row has none."""
    return num(doc, f"{k}.{field}", digits, signed=field in SIGNED) if row.get(field) is not None else "–"


def _front(doc: dict, space: Space) -> str:
    front = (doc["final"] or {}).get("pareto") or []
    if not front:
        return ""
    names = _model_names(doc["final"])
    body = "".join(
        f"<tr><td class=\"t\">pareto/{e['n']}</td><td class=\"t\">{escape(space.describe(e['architecture']))}</td>"
        f"<td>{num(doc, f'final.pareto.{i}.latency_ms', 2)}</td><td>{_maybe(doc, e, f'final.pareto.{i}', 'speedup_over_default', 2)}</td>"
        f"<td>{num(doc, f'final.pareto.{i}.valid_metric')}</td><td>{_maybe(doc, e, f'final.pareto.{i}', 'test_ap')}</td>"
        f"<td>{_maybe(doc, e, f'final.pareto.{i}', 'saved_seed', 0)}</td><td>{_maybe(doc, e, f'final.pareto.{i}', 'saved_test_ap')}</td>"
        f"<td class=\"t\">{escape(', '.join(names.get(k, k) for k in e.get('dominated_by') or [])) or '–'}</td></tr>"
        for i, e in enumerate(front))
    return ("<h2>Pareto front (accuracy against served latency)</h2><p>Each is an ordinary model directory that "
            "<code>evaluate</code>, <code>predict</code>, <code>cache</code> and <code>serve</code> accept; fastest first. "
            "An architecture's scores are the means over its retrain seeds (what ranks it); its folder holds one model, "
            "the first seed's, whose own test AP is what <code>evaluate --split test</code> on it reports. "
            "\"Overtaken by\": retrained candidates that beat it on both validation metric and served ms (a child's "
            "search-time place on the front did not survive its retrain).</p><table><tr><th class=\"t\">folder</th>"
            "<th class=\"t\">architecture</th><th>served ms</th><th>× default speed</th><th>valid metric (seeds' mean)</th>"
            "<th>test AP (seeds' mean)</th><th>seed saved</th><th>its test AP</th>"
            "<th class=\"t\">overtaken by</th></tr>" + body + "</table>")


def _model_names(final: dict) -> dict[str, str]:
    """Each retrained candidate's key → the folder a user finds it in (pareto/<n>, best/, distilled/,
    default/), or its roles when it was not saved (a top-k candidate off the front)."""
    names = {c["key"]: " and ".join(c["roles"]) + " (not saved)" for c in final.get("candidates", [])}
    for c in final.get("candidates", []):
        for role, folder in (("default", "default/"), ("distilled", "distilled/")):
            if role in c["roles"]:
                names[c["key"]] = folder
        if c.get("best"):
            names[c["key"]] = "best/"
    for e in final.get("pareto", []):
        names[e["key"]] = f"pareto/{e['n']}"
    return names


def _top_trials(doc: dict, space: Space) -> str:
    trials = doc["trials"]
    if not trials:
        return ""
    order = sorted(range(len(trials)), key=lambda i: (-trials[i]["reward"], trials[i]["trial"]))[:TOP_TRIALS]
    one_seed = doc["search"].get("child_seeds", 2) < 2  # no spread measured: not "± 0.0000" (as the log lines say)
    spread = (lambda i: "") if one_seed else (lambda i: f" ± {num(doc, f'trials.{i}.spread')}")  # noqa: E731
    body = "".join(
        f"<tr><td>{num(doc, f'trials.{i}.trial', 0)}</td><td>{num(doc, f'trials.{i}.step', 0)}</td>"
        f"<td>{num(doc, f'trials.{i}.reward')}</td><td>{num(doc, f'trials.{i}.metric')}{spread(i)}</td>"
        f"<td>{num(doc, f'trials.{i}.latency_ms', 2)}</td><td>{num(doc, f'trials.{i}.seconds', 1)}</td>"
        f"<td>{'repeat' if trials[i].get('cached') else ''}</td><td class=\"t\">{escape(space.describe(trials[i]['architecture']))}</td></tr>"
        for i in order)
    return (f"<h2>Best trials by reward</h2><p>The top {len(order)} of {len(trials)} (all in trials.jsonl). Search-time "
            "scores: small budget, few seeds — they rank architectures, they do not finish them. \"repeat\": an architecture "
            "sampled again, its first result reused.</p><table><tr><th>trial</th><th>step</th><th>reward</th>"
            "<th>metric{'' if one_seed else ' ± seeds'}</th><th>ms/request</th><th>s</th><th></th><th class=\"t\">architecture</th></tr>" + body + "</table>")


def _plots(out: Path) -> str:
    shown = [f"<figure>{png_img((out / name).read_bytes(), caption)}<figcaption class=\"note\">{escape(caption)}</figcaption></figure>"
             for name, caption in PLOTS if (out / name).is_file()]
    return "<h2>Plots</h2>" + "".join(shown) if shown else ""


def _cost(doc: dict, seconds: float) -> str:
    final, s = doc["final"], doc["search"]
    retrain = (final or {}).get("retrain") or {}
    distilled = (final or {}).get("distilled") or {}
    items = [f"<li>the whole search: {seconds / 60:.1f} minutes (--budget-minutes {num(doc, 'search.budget_minutes', 0)}; 0: no bound)</li>",
             f"<li>children: {fmt(sum(not t.get('cached') for t in doc['trials']))} trained, "
             f"{fmt(sum(t.get('seconds', 0.0) for t in doc['trials'] if not t.get('cached')) / 60, 1)} minutes of child time</li>"]
    if retrain:
        items.append(f"<li>retrains and distillation: {num(doc, 'final.retrain.candidates', 0)} models, "
                     f"{fmt(retrain['seconds'] / 60, 1)} minutes (the budget had reserved {fmt(retrain['estimate_s'] / 60, 1)} for them "
                     "and the final timing)</li>")
    if distilled.get("seconds") is not None:
        items.append(f"<li>distilling best/'s query tower: {fmt(distilled['seconds'] / 60, 1)} minutes</li>")
    return "<h2>What it cost</h2><ul>" + "".join(items) + f"</ul><p class=\"note\">{fmt(s.get('workers'))} worker(s), " \
           f"{fmt(s.get('threads'))} thread(s) per child.</p>"


FILES = ("<h2>Files</h2><ul class=\"note\"><li>search.json: the settings and the noise floor</li><li>trials.jsonl: every "
         "trial (architecture, reward, per-seed scores, served ms, seconds)</li><li>final.json: the retrained candidates, the "
         "front, the paired tests, the distilled model</li><li>best/, default/, distilled/, pareto/&lt;n&gt;/: model "
         "directories</li><li>latency.json: the side-by-side timing</li></ul>")
