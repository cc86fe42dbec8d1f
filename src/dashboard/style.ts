/**
 * The dashboard's stylesheet, served as /ui/static/dashboard.css (the CSP allows no inline
 * style). Colours keep WCAG AA contrast on their backgrounds; f0–f15 and g0–g15 are the ANSI
 * palette for log spans.
 */
export const DASHBOARD_CSS = `
:root { --fg:#1b1f24; --muted:#57606a; --bg:#fff; --line:#d0d7de; --accent:#0550ae; --log-bg:#0d1117; --log-fg:#e6edf3; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "DejaVu Sans", sans-serif; color:var(--fg); background:var(--bg); }
a { color:var(--accent); }
header.top { display:flex; gap:24px; align-items:center; padding:10px 20px; background:#24292f; color:#fff; }
header.top a { color:#fff; text-decoration:none; }
header.top .brand { font-weight:700; font-size:16px; }
header nav { display:flex; gap:16px; }
header nav a[aria-current] { text-decoration:underline; text-underline-offset:4px; }
header .who { margin-left:auto; display:flex; gap:10px; align-items:center; }
button { font:inherit; padding:4px 12px; border:1px solid var(--line); border-radius:6px; background:#f6f8fa; color:var(--fg); cursor:pointer; }
main { padding:16px 20px 40px; max-width:1400px; }
h1 { font-size:22px; margin:4px 0 4px; }
h2 { font-size:17px; margin:20px 0 8px; }
.sub { color:var(--muted); font-size:12.5px; margin:2px 0; }
.error { color:#a40e26; background:#ffebe9; border:1px solid #ffcecb; padding:6px 10px; border-radius:6px; }
.empty { color:var(--muted); }
.visually-hidden { position:absolute; width:1px; height:1px; overflow:hidden; clip:rect(0 0 0 0); white-space:nowrap; }
table { border-collapse:collapse; width:100%; margin:6px 0 12px; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-weight:600; background:#f6f8fa; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
.state { display:inline-block; padding:0 8px; border-radius:10px; font-size:12px; font-weight:600; background:#eaeef2; color:#24292f; }
.s-succeeded { background:#dafbe1; color:#116329; }
.s-running, .s-starting { background:#ddf4ff; color:#0550ae; }
.s-queued, .s-waiting { background:#fff8c5; color:#6b4f00; }
.s-failed, .s-error, .s-oom, .s-timeout { background:#ffebe9; color:#a40e26; }
.b-open { background:#ffebe9; color:#a40e26; }
.b-half-open { background:#fff8c5; color:#6b4f00; }
.b-closed { background:#dafbe1; color:#116329; }
.s-cancelled, .s-skipped { background:#eaeef2; color:#57606a; }
.cols { display:grid; grid-template-columns: minmax(280px, 1fr) 2fr; gap:24px; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:3px 14px; margin:0; }
dl.facts dt { color:var(--muted); }
dl.facts dd { margin:0; }
ul.reasons { margin:0; padding-left:18px; }
form.login { max-width:420px; display:grid; gap:8px; }
form.login input { font:inherit; padding:6px 8px; border:1px solid #8c959f; border-radius:6px; }
.log { background:var(--log-bg); color:var(--log-fg); font:12.5px/1.5 "DejaVu Sans Mono", ui-monospace, monospace; padding:8px 0; border-radius:6px; overflow:auto; max-height:75vh; white-space:pre-wrap; word-break:break-all; }
.log .line { display:flex; padding-right:12px; }
.log .line.hl { background:#3b2e00; }
.log .ln { flex:none; width:56px; padding-right:12px; text-align:right; color:#8b949e; text-decoration:none; user-select:none; }
.log .ln:hover { color:#e6edf3; text-decoration:underline; }
.log details > summary { cursor:pointer; list-style:none; display:flex; }
.log details > summary::before { content:"▸"; color:#8b949e; width:0; margin-left:-2px; }
.log details[open] > summary::before { content:"▾"; }
.log details > summary .t { font-weight:600; }
.log .note { color:#8b949e; padding:0 12px 4px 68px; }
.b { font-weight:700; } .d { opacity:.75; } .i { font-style:italic; } .u { text-decoration:underline; }
.f0{color:#6e7681}.f1{color:#ff7b72}.f2{color:#3fb950}.f3{color:#d29922}.f4{color:#58a6ff}.f5{color:#bc8cff}.f6{color:#39c5cf}.f7{color:#e6edf3}
.f8{color:#8b949e}.f9{color:#ffa198}.f10{color:#56d364}.f11{color:#e3b341}.f12{color:#79c0ff}.f13{color:#d2a8ff}.f14{color:#56d4dd}.f15{color:#ffffff}
.g0{background:#484f58}.g1{background:#8e1519}.g2{background:#196c2e}.g3{background:#7d4e00}.g4{background:#0d419d}.g5{background:#6e40c9}.g6{background:#1b7c83}.g7{background:#b1bac4;color:#0d1117}
.g8{background:#6e7681}.g9{background:#b62324}.g10{background:#2ea043}.g11{background:#9e6a03}.g12{background:#1f6feb}.g13{background:#8957e5}.g14{background:#3192aa}.g15{background:#f0f6fc;color:#0d1117}
svg.chart text { font-size:12px; fill:var(--fg); }
svg.chart .bar { fill:#0969da; }
svg.chart .bar.hist { fill:#8250df; }
.c0{fill:#0969da;background:#0969da}.c1{fill:#8250df;background:#8250df}.c2{fill:#1a7f37;background:#1a7f37}.c3{fill:#bc4c00;background:#bc4c00}
.c4{fill:#bf3989;background:#bf3989}.c5{fill:#1b7c83;background:#1b7c83}.c6{fill:#9a6700;background:#9a6700}.c7{fill:#57606a;background:#57606a}
.swatch { display:inline-block; width:10px; height:10px; margin-right:4px; }
.key { margin-right:12px; }
.grid { display:flex; flex-wrap:wrap; gap:16px; }
figure { margin:0; }
figcaption { font-weight:600; margin-bottom:4px; }
.dag-wrap { overflow:auto; border:1px solid var(--line); border-radius:6px; padding:8px; }
svg.dag .edge { fill:none; stroke:#8c959f; stroke-width:1.5; }
svg.dag .node { fill:#f6f8fa; stroke:#8c959f; }
svg.dag .node.s-succeeded { fill:#dafbe1; stroke:#1a7f37; }
svg.dag .node.s-running, svg.dag .node.s-starting { fill:#ddf4ff; stroke:#0969da; }
svg.dag .node.s-failed, svg.dag .node.s-error, svg.dag .node.s-oom, svg.dag .node.s-timeout { fill:#ffebe9; stroke:#cf222e; }
svg.dag .node.s-queued, svg.dag .node.s-waiting { fill:#fff8c5; stroke:#9a6700; }
svg.dag .node-name { font-weight:600; font-size:13px; fill:#1b1f24; }
svg.dag .node-state { font-size:12px; fill:#424a53; }
`;
