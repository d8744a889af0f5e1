"""`tcred explore`: one self-contained HTML page per run (and an index page per folder of runs).

The page holds everything inline (no network, no CDN): its style, its script and the recorded steps
as JSON. It shows one prompt's group at a time (lazy rendering): the G rollouts lined up, a cell per
token, reward and outcome advantage in the margin; lanes colour the tokens by the credit (diverging
scale around 0) or by a signal (sequential scale, the step's top 20% of the signal outlined), one row
per checked lane; hovering a token shows every recorded value of it. A prompt list with search and a
step selector pick the group. Where the record holds the identifiability study's decisive-token flags
(`rl.record_decisive_prompts`), the decisive tokens get a green bar above, their Monte-Carlo advantage is
a lane (`mc_advantage`), each labelled rollout's margin gives the share of its credit that landed on
them (|credit × weight|, what each token's gradient gets; the fatal errors' share likewise), and the legend gives K, δ and the label noise (the bound-violating share).

`#prompt=N&lanes=credit,entropy` in the URL opens prompt N of the first shown step with those lanes.
`#selftest` appended to the page's URL makes it check itself on load (every lane renders, hovering a
cell shows its values, no script error) and write the result into `<pre id="selftest">`: what the
real-browser test reads with `chromium --headless --dump-dom`.
"""

from __future__ import annotations

import html
import json
import math
import os
import pathlib
from typing import Any

import numpy as np

from tcred.evaluation.identify_metrics import violating_share
from tcred.signals import get_signal
from tcred.training.record import RecordError, StepRecord, load_record, record_path, recorded_steps
from tcred.training.tracking import write_atomic

TOP_FRACTION = 0.2  # the outlined share of each signal's valid tokens


class ExploreError(ValueError):
  """Bad input for `tcred explore` (the message names the problem and the recorded steps)."""


def _rounded(x: np.ndarray, digits: int = 4) -> list:
  """`x` rounded to about `digits` significant digits of its largest magnitude (compact JSON)."""
  big = float(np.max(np.abs(x))) if x.size else 0.0
  decimals = digits - 1 - (int(math.floor(math.log10(big))) if big > 0 and math.isfinite(big) else 0)
  y = np.round(np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0), max(decimals, 0))
  return y.tolist()


# What the legend says of the lanes a record derives from a method's extras (`record.method_signals`); a
# registered signal's lane gets its registry description.
LANE_NOTES = {"judge_score": "the judge's score s_k of the token's step k",
              "judge_change": "|s_k − s_(k−1)|: the judge's score change at the token's step"}


def _lane_note(name: str) -> str:
  if name in LANE_NOTES:
    return LANE_NOTES[name]
  try:
    return get_signal(name).description
  except ValueError:  # not a registered signal (entropy, ig, oracle_value, …)
    return ""


def _lane(name: str, values: np.ndarray, mask: np.ndarray, *, diverging: bool) -> dict[str, Any]:
  """The colour scale of one lane over a step's valid tokens: symmetric around 0 for a diverging lane,
  [min, max] for a sequential one with its top-`TOP_FRACTION` threshold; "note": the legend's line on it."""
  v = values[mask]
  v = v[np.isfinite(v)]
  note = _lane_note(name)
  if diverging:
    m = float(np.max(np.abs(v))) if v.size else 0.0
    return {"name": name, "kind": "diverging", "lo": -m, "hi": m, "top": None, "note": note}
  lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
  top = float(np.quantile(v, 1.0 - TOP_FRACTION)) if v.size else None
  if top is not None and top <= lo:  # a constant or mostly-minimum lane (a 0/1 flag, the weights): no top set
    top = None
  return {"name": name, "kind": "sequential", "lo": lo, "hi": hi, "top": top, "note": note}


MC_LANE = "mc_advantage"  # the lane of the decisive flags' Monte-Carlo advantages A_t


def decisive_summary(r: StepRecord) -> dict[str, Any] | None:
  """The legend's facts about a record's decisive flags: K, δ, how many prompts were labelled, the flags'
  count, their bound-violating share (flags on tokens with p > 1 − δ, p = exp(−surprisal): |A_t| ≤ 1 − p
  on-policy, so those flags are Monte-Carlo noise; None without a surprisal lane or a flag) and the
  labelling's cost; None when the record has no flags."""
  d = r.decisive
  if d is None:
    return None
  on = r.mask & d.labelled[:, None, None]
  share = None
  if "surprisal" in r.signals and d.decisive[on].any():
    can_decide = np.exp(-r.signals["surprisal"].astype(np.float64)) <= 1.0 - d.delta
    share = round(violating_share(d.decisive[on], can_decide[on]), 4)
  return {"continuations": d.continuations, "delta": d.delta, "labelled": int(d.labelled.sum()),
          "prompts": len(r.prompts), "flags": int(d.decisive[on].sum()), "tokens": int(on.sum()),
          "violating": share, "seconds": round(d.seconds, 2)}


def step_data(r: StepRecord) -> dict[str, Any]:
  """The JSON the page embeds for one recorded step."""
  lanes_values = {"credit": r.credit, **r.signals, "weight": r.weight}
  if r.decisive is not None:
    lanes_values[MC_LANE] = r.decisive.advantage
  lanes = [_lane(k, np.asarray(v, np.float64), r.mask, diverging=k in ("credit", MC_LANE))
           for k, v in lanes_values.items()]
  rounded = {k: np.asarray(v, np.float32) for k, v in lanes_values.items()}
  prompts = []
  for i, prompt in enumerate(r.prompts):
    rollouts = []
    for j in range(r.tokens.shape[1]):
      n = int(r.mask[i, j].sum())
      rollout = {"r": float(r.rewards[i, j]), "a": round(float(r.outcome_advantage[i, j]), 4),
                 "p": r.pieces[i][j], "id": r.tokens[i, j, :n].tolist(),
                 "v": [_rounded(rounded[k][i, j, :n]) for k in lanes_values]}
      if r.decisive is not None and r.decisive.labelled[i]:
        rollout["d"] = np.flatnonzero(r.decisive.decisive[i, j, :n]).tolist()  # the decisive token positions
      rollouts.append(rollout)
    prompts.append({"prompt": prompt, "valid": bool(r.group_valid[i]), "rollouts": rollouts,
                    "labelled": bool(r.decisive is not None and r.decisive.labelled[i])})
  return {"step": r.step, "lanes": lanes, "prompts": prompts, "decisive": decisive_summary(r)}


def page_html(records: list[StepRecord], *, initial_step: int | None = None) -> str:
  """The explorer page of one run's `records` (one or more steps, ascending)."""
  first = records[0]
  data = {"run": {"name": first.name, "seed": first.seed, "task": first.task, "credit": first.credit_method},
          "steps": [step_data(r) for r in records],
          "initial": 0 if initial_step is None else [r.step for r in records].index(initial_step)}
  payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
  title = html.escape(f"tcred explore: {first.name} seed {first.seed}")
  return (_TEMPLATE.replace("__TITLE__", title).replace("__STYLE__", _STYLE).replace("__SCRIPT__", _SCRIPT)
          .replace("__DATA__", payload))


def _is_run_dir(path: pathlib.Path) -> bool:
  return (path / "config.json").is_file() or (path / "explore").is_dir()


def run_records(run_dir: pathlib.Path, step: int | None) -> list[StepRecord]:
  """The records the page of `run_dir` shows: every recorded step, or only `step`.

  Raises ExploreError for a run with no recorded step, a step that was not recorded, or a corrupt record."""
  steps = recorded_steps(run_dir)
  if not steps:
    raise ExploreError(f"{run_dir} has no recorded step (no {run_dir}/explore/step-*.npz): runs record every "
                       "rl.record_every steps (default: at their evaluation steps) unless rl.record_every=0")
  if step is not None and step not in steps:
    raise ExploreError(f"--step {step} was not recorded in {run_dir}; recorded steps: {steps}")
  try:
    return [load_record(record_path(run_dir, s)) for s in ([step] if step is not None else steps)]
  except RecordError as e:
    raise ExploreError(f"{e}; recorded steps: {steps}") from None


def _check_out(out: pathlib.Path) -> None:
  parent = out.parent if out.parent != pathlib.Path("") else pathlib.Path(".")
  if out.is_dir():
    raise ExploreError(f"--out {out} is a directory; give a file name, e.g. {out / 'explore.html'}")
  if not parent.is_dir():
    raise ExploreError(f"--out {out}: the directory {parent} does not exist")
  if not os.access(parent, os.W_OK):
    raise ExploreError(f"--out {out}: the directory {parent} is not writable")


def _write(out: pathlib.Path, text: str) -> None:
  try:
    write_atomic(out, text)
  except OSError as e:
    raise ExploreError(f"--out {out} cannot be written: {e}") from None


def explore(path: str | pathlib.Path, *, step: int | None = None, out: str | pathlib.Path | None = None
            ) -> tuple[pathlib.Path, list[pathlib.Path]]:
  """Writes the explorer page of a run directory (default `RUN/explore/explore.html`), or for a folder of
  runs each run's page and an index page linking them (default `ROOT/explore.html`).

  Returns `(the page or index written, every page written)`. Raises ExploreError, before writing anything,
  for a path that is neither, no recorded step, a step not recorded, a corrupt record, an unwritable --out."""
  path = pathlib.Path(path)
  if step is not None and step < 0:
    raise ExploreError(f"--step must be a recorded step >= 0, got {step}")
  if out is not None:
    _check_out(pathlib.Path(out))
  if not path.is_dir():
    raise ExploreError(f"{path} is not a directory: give a run directory (e.g. runs/countdown-grpo/seed-0) "
                       "or a folder of runs")
  if _is_run_dir(path):
    target = pathlib.Path(out) if out is not None else path / "explore" / "explore.html"
    records = run_records(path, step)
    _check_out(target)
    _write(target, page_html(records, initial_step=step))
    return target, [target]
  if step is not None:
    raise ExploreError(f"--step applies to one run directory; {path} is a folder of runs")
  runs = sorted({p.parent for p in path.rglob("config.json") if _is_run_dir(p.parent)})
  if not runs:
    raise ExploreError(f"{path} holds no run directory (a folder with config.json)")
  target = pathlib.Path(out) if out is not None else path / "explore.html"
  _check_out(target)
  pages, entries = [], []
  for run in runs:  # every record checked (and every page built) before one file is written
    steps = recorded_steps(run)
    page = None
    if steps:
      page = (run / "explore" / "explore.html", page_html(run_records(run, None)))
      pages.append(page)
    entries.append((run, steps, page[0] if page else None))
  for page_path, text in pages:
    _write(page_path, text)
  _write(target, index_html(path, entries, target))
  return target, [target, *(p for p, _ in pages)]


def _summary(run: pathlib.Path) -> dict[str, Any]:
  for name in ("summary.json", "config.json"):
    try:
      d = json.loads((run / name).read_text())
      if isinstance(d, dict):
        return d
    except (OSError, ValueError):
      continue
  return {}


def index_html(root: pathlib.Path, entries: list[tuple[pathlib.Path, list[int], pathlib.Path | None]],
               target: pathlib.Path) -> str:
  """An index page of the runs under `root`: experiment, method, seed, final pass@1 and a link to each page."""
  rows = []
  for run, steps, page in entries:
    summary, config = _summary(run), {}
    try:
      config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
      pass
    final = summary.get("final_pass1")
    method = summary.get("credit") or config.get("method") or config.get("credit", {}).get("name", "?")
    seed = summary.get("seed", config.get("seed", "?"))
    name = summary.get("name", config.get("name", run.name))
    link = (f'<a href="{html.escape(os.path.relpath(page, target.parent))}">{len(steps)} steps</a>' if page
            else "not recorded")
    rows.append(f"<tr><td>{html.escape(str(name))}</td><td>{html.escape(str(method))}</td>"
                f"<td>{html.escape(str(seed))}</td>"
                f"<td>{'—' if final is None else f'{final:.3f}'}</td><td>{link}</td></tr>")
  return (f"<!doctype html><html><head><meta charset='utf-8'><title>tcred explore: {html.escape(str(root))}</title>"
          f"<style>{_STYLE}</style></head><body class='index'><h1>tcred explore: {html.escape(str(root))}</h1>"
          "<table><thead><tr><th>experiment</th><th>method</th><th>seed</th><th>final pass@1</th>"
          f"<th>explorer</th></tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>")


_STYLE = """
body{font:13px/1.4 system-ui,sans-serif;margin:0;color:#222}
body.index{margin:16px} table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
#app{display:flex;height:100vh}
#side{width:260px;border-right:1px solid #ccc;display:flex;flex-direction:column}
#side input,#side select{margin:4px 6px}
#plist{overflow:auto;flex:1}
.pi{padding:3px 6px;cursor:pointer;border-bottom:1px solid #eee;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.pi.sel{background:#def} .pi.bad{color:#999}
#main{flex:1;overflow:auto;padding:6px 10px}
#lanes label{margin-right:10px}
#legend{margin:6px 0} .lg{display:inline-block;margin-right:18px} .bar{display:inline-block;width:120px;height:10px;vertical-align:middle;margin:0 4px;border:1px solid #aaa}
.ro{display:flex;align-items:flex-start;margin:2px 0}
.mg{width:190px;flex:none;font-family:monospace;font-size:11px;color:#444}
.tk{font-family:monospace;white-space:pre-wrap;word-break:break-all;flex:1}
.c{display:inline-block;min-width:7px;padding:0 1px;margin:0 0 1px 0;border:1px solid transparent}
.c.top{border-color:#000} .c.fatal{border-bottom:3px solid #e00} .c.dec{border-top:3px solid #1a9850}
.c:hover{outline:2px solid #f80}
.sep{border-top:1px solid #ddd;margin:4px 0}
#tip{position:fixed;display:none;background:#fff;border:1px solid #888;padding:4px 6px;font:11px monospace;pointer-events:none;z-index:9;white-space:pre}
"""

_TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>__TITLE__</title><style>__STYLE__</style>
<script>window.__errors=[];window.addEventListener('error',function(e){window.__errors.push(String(e.message))});
(function(){var ce=console.error;console.error=function(){window.__errors.push(Array.prototype.join.call(arguments,' '));ce.apply(console,arguments)}})();</script>
</head><body>
<div id="app"><div id="side"><div id="runinfo" style="padding:4px 6px"></div>
<select id="step" title="recorded step"></select><input id="search" placeholder="search prompts">
<div id="plist"></div></div>
<div id="main"><div id="lanes"></div><div id="legend"></div><div id="prompt"></div><div id="group"></div></div></div>
<div id="tip"></div><pre id="selftest"></pre>
<script type="application/json" id="data">__DATA__</script>
<script>__SCRIPT__</script>
</body></html>
"""

_SCRIPT = r"""
(function(){
'use strict';
var D=JSON.parse(document.getElementById('data').textContent);
var S=D.initial, P=0, shown={credit:true,entropy:true};
var $=function(id){return document.getElementById(id)};
function esc(s){return s.replace(/[&<>"]/g,function(c){return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]})}
function fmt(x){if(x===null||x===undefined)return '—';var a=Math.abs(x);return (a!==0&&(a<1e-3||a>=1e4))?x.toExponential(3):(+x.toPrecision(4)).toString()}
function color(l,v){
  if(l.kind==='diverging'){var m=l.hi||1,t=Math.max(-1,Math.min(1,v/m));
    var c=t>=0?[178,24,43]:[33,102,172],a=Math.abs(t);
    return [255+(c[0]-255)*a,255+(c[1]-255)*a,255+(c[2]-255)*a,a]}
  var w=(l.hi>l.lo)?(v-l.lo)/(l.hi-l.lo):0;w=Math.max(0,Math.min(1,w));
  return [255+(84-255)*w,255+(39-255)*w,255+(143-255)*w,w]}
function css(c){return 'rgb('+(c[0]|0)+','+(c[1]|0)+','+(c[2]|0)+')'+(c[3]>0.6?';color:#fff':'')}
function piece(p){if(p==='')return '⟨eos⟩';if(p==='\n')return '↵';return p}
function lanes(){return D.steps[S].lanes}
function drawSteps(){var s=$('step');s.innerHTML=D.steps.map(function(x,i){return '<option value="'+i+'"'+(i===S?' selected':'')+'>step '+x.step+'</option>'}).join('')}
function drawLaneBoxes(){
  $('lanes').innerHTML='lanes: '+lanes().map(function(l,k){return '<label><input type="checkbox" data-lane="'+k+'"'+(shown[l.name]?' checked':'')+'> '+esc(l.name)+'</label>'}).join('');
}
function drawLegend(){
  $('legend').innerHTML=lanes().filter(function(l){return shown[l.name]}).map(function(l){
    var g=l.kind==='diverging'?'linear-gradient(90deg,rgb(33,102,172),#fff,rgb(178,24,43))':'linear-gradient(90deg,#fff,rgb(84,39,143))';
    var mid=(l.lo+l.hi)/2;
    return '<span class="lg"><b>'+esc(l.name)+'</b> '+fmt(l.lo)+'<span class="bar" style="background:'+g+'"></span>'+fmt(l.hi)+
      ' (mid '+fmt(mid)+')'+(l.top!==null?'; outlined: top 20% (≥ '+fmt(l.top)+')':'')+(l.note?' — '+esc(l.note):'')+'</span>'}).join('')+
    (laneIndex('fatal')>=0?'<span class="lg"><span class="c fatal">x</span> fatal error (the oracle value goes 1 → 0; margin: the share of |credit × weight| on it)</span>':'')+decLegend();
}
function decLegend(){var d=D.steps[S].decisive;if(!d)return '';
  return '<span class="lg"><span class="c dec">x</span> decisive token: |A<sub>t</sub>| ≥ δ = '+fmt(d.delta)+', A<sub>t</sub> the Monte-Carlo advantage from K = '+d.continuations+
    ' continuations per prefix (lane mc_advantage); margin: the share of the rollout\'s credit |credit × weight| on them; labelled: '+d.labelled+' of '+d.prompts+' prompts ('+d.flags+' flags on '+d.tokens+' tokens, '+fmt(d.seconds)+' s)'+
    (d.violating!==null?'; label noise: '+(100*d.violating).toFixed(1)+'% of the flags sit on tokens with p &gt; 1 − δ':'')+'</span>'}
function trained(r,t){var W=laneIndex('weight');return Math.abs(r.v[0][t]*(W<0?1:r.v[W][t]))}
function decShare(r){if(!r.d)return null;var a=0,f=0,k=0;
  for(var t=0;t<r.p.length;t++){var c=trained(r,t);a+=c;if(k<r.d.length&&r.d[k]===t){f+=c;k++}}
  return r.d.length?(a>0?f/a:0):-1}
function drawList(){
  var q=$('search').value.toLowerCase(),ps=D.steps[S].prompts,h=[];
  for(var i=0;i<ps.length;i++){var p=ps[i];if(q&&p.prompt.toLowerCase().indexOf(q)<0)continue;
    var m=0;p.rollouts.forEach(function(r){m+=r.r});m/=Math.max(1,p.rollouts.length);
    h.push('<div class="pi'+(i===P?' sel':'')+(p.valid?'':' bad')+'" data-p="'+i+'" title="'+esc(p.prompt)+'">'+i+'. r̄='+fmt(m)+' '+esc(p.prompt)+'</div>')}
  $('plist').innerHTML=h.join('')||'<div class="pi">no prompt matches</div>';
}
function laneIndex(name){for(var k=0;k<lanes().length;k++)if(lanes()[k].name===name)return k;return -1}
function fatalShare(r){var F=laneIndex('fatal');if(F<0)return null;var a=0,f=0,any=false;
  for(var t=0;t<r.p.length;t++){var c=trained(r,t);a+=c;if(r.v[F][t]>0){f+=c;any=true}}
  return any?(a>0?f/a:0):null}
function drawGroup(){
  var st=D.steps[S],p=st.prompts[P],L=st.lanes,h=[],F=laneIndex('fatal');
  if(!p){$('group').innerHTML='';$('prompt').textContent='';return}
  $('prompt').innerHTML='<b>prompt '+P+'</b>'+(p.valid?'':' (filler group: did not train)')+': <code>'+esc(p.prompt)+'</code>';
  var on=[];for(var k=0;k<L.length;k++)if(shown[L[k].name])on.push(k);
  p.rollouts.forEach(function(r,g){var fs=fatalShare(r),ds=decShare(r),dec={};
    (r.d||[]).forEach(function(t){dec[t]=true});
    on.forEach(function(k,n){var l=L[k],v=r.v[k],c=[];
      for(var t=0;t<r.p.length;t++){c.push('<span class="c'+(l.top!==null&&v[t]>=l.top?' top':'')+(F>=0&&r.v[F][t]>0?' fatal':'')+(dec[t]?' dec':'')+'" data-g="'+g+'" data-t="'+t+'" data-l="'+k+'" style="background:'+css(color(l,v[t]))+'">'+esc(piece(r.p[t]))+'</span>')}
      h.push('<div class="ro" data-lane="'+esc(l.name)+'"><div class="mg">'+(n===0?'#'+g+' r='+fmt(r.r)+' A='+fmt(r.a)+(fs!==null?'<br>fatal: '+(100*fs).toFixed(0)+'% of credit':'')+
        (ds!==null?'<br>decisive: '+(ds<0?'none':(100*ds).toFixed(0)+'% of credit'):'')+'<br>':'')+'<i>'+esc(l.name)+'</i></div><div class="tk">'+c.join('')+'</div></div>')});
    h.push('<div class="sep"></div>')});
  $('group').innerHTML=h.join('');
}
function tipText(g,t){
  var st=D.steps[S],r=st.prompts[P].rollouts[g],L=st.lanes;
  var s='rollout '+g+'  token '+t+'  '+JSON.stringify(r.p[t])+'  id '+r.id[t]+'\nreward '+fmt(r.r)+'  outcome advantage '+fmt(r.a);
  for(var k=0;k<L.length;k++)s+='\n'+L[k].name+': '+fmt(r.v[k][t])+(L[k].top!==null&&r.v[k][t]>=L[k].top?'  (top 20%)':'');
  if(st.decisive)s+='\ndecisive: '+(r.d?(r.d.indexOf(t)>=0?'yes':'no')+' (|A_t| ≥ '+fmt(st.decisive.delta)+')':'not labelled');
  return s}
function all(){drawLaneBoxes();drawLegend();drawList();drawGroup()}
$('step').addEventListener('change',function(e){S=+e.target.value;P=0;all()});
$('search').addEventListener('input',drawList);
$('plist').addEventListener('click',function(e){var d=e.target.closest('[data-p]');if(!d)return;P=+d.getAttribute('data-p');drawList();drawGroup()});
$('lanes').addEventListener('change',function(e){var k=e.target.getAttribute('data-lane');if(k===null)return;shown[lanes()[+k].name]=e.target.checked;drawLegend();drawGroup()});
$('group').addEventListener('mouseover',function(e){var c=e.target.closest('.c');var tip=$('tip');if(!c){tip.style.display='none';return}
  tip.textContent=tipText(+c.getAttribute('data-g'),+c.getAttribute('data-t'));tip.style.display='block';
  tip.style.left=Math.min((e.clientX||0)+12,window.innerWidth-320)+'px';tip.style.top=((e.clientY||0)+14)+'px'});
$('group').addEventListener('mouseleave',function(){$('tip').style.display='none'});
$('runinfo').innerHTML='<b>'+esc(D.run.name)+'</b> seed '+D.run.seed+'<br>task '+esc(D.run.task)+', credit '+esc(D.run.credit);
var H={};location.hash.replace(/^#/,'').split('&').forEach(function(kv){var i=kv.indexOf('=');if(i>0)H[kv.slice(0,i)]=decodeURIComponent(kv.slice(i+1))});
if(H.prompt!==undefined&&D.steps[S].prompts[+H.prompt])P=+H.prompt;
if(H.lanes){shown={};H.lanes.split(',').forEach(function(n){shown[n]=true})}
drawSteps();all();
document.documentElement.setAttribute('data-first-render-ms',performance.now().toFixed(1));
requestAnimationFrame(function(){setTimeout(function(){document.documentElement.setAttribute('data-first-paint-ms',performance.now().toFixed(1))},0)});
if(location.hash==='#selftest'){
  var res={lanes:{},hover:null,errors:null};
  lanes().forEach(function(l){shown={};shown[l.name]=true;drawLegend();drawGroup();
    var cells=document.querySelectorAll('#group .c'),coloured=0;
    for(var i=0;i<cells.length;i++)if(cells[i].style.background)coloured++;
    res.lanes[l.name]={cells:cells.length,coloured:coloured,rows:document.querySelectorAll('#group .ro').length}});
  shown={};lanes().forEach(function(l){shown[l.name]=true});drawLaneBoxes();drawLegend();
  var t0=performance.now();drawGroup();res.draw_all_lanes_ms=+(performance.now()-t0).toFixed(1);
  shown={credit:true};drawLegend();drawGroup();res.decisive_cells=document.querySelectorAll('#group .c.dec').length;
  shown={};lanes().forEach(function(l){shown[l.name]=true});drawLegend();drawGroup();
  var c=document.querySelector('#group .c');
  if(c){c.dispatchEvent(new MouseEvent('mouseover',{bubbles:true,clientX:20,clientY:20}));res.hover=$('tip').style.display==='block'?$('tip').textContent:null}
  res.errors=window.__errors;
  $('selftest').textContent=JSON.stringify(res);
}
})();
"""
